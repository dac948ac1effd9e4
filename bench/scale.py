"""Distillation throughput with 1 and 2 torchrun ranks.

Trains (or reuses) the toy teacher in a workspace of its own, then renders
`--views` pseudo-views with 1 rank and with 2 ranks (`torchrun --standalone`),
each from scratch (`--force`). Prints a table and, last, one JSON line with
`views_per_s_1rank`, `views_per_s_2ranks`.

On this 2-core machine two ranks share the cores that one rank's two torch
threads already use: there is no idle core to add, so the speed-up is bounded
by 2x and comes only from two single-threaded processes using the cores better
than one process that splits each small op across two threads (measured here:
1.6x).
On GPUs each rank owns a device and the rate adds up: the projection line
multiplies a one-GPU measurement (run this script there) by the rank count.

    python bench/scale.py [--workspace bench_runs/scale] [--views 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.machine import describe

ROOT = Path(__file__).resolve().parent.parent


def _run(ws: Path, ranks: int, views: int, threads: int) -> dict:
    sets = ["--set", f"distill.n_views={views}"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "pipeline", "stage", "distill", "configs/toy.yaml", "--force", *sets]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "pipeline", "stage", "distill", "configs/toy.yaml", "--force", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    subprocess.run(cmd, cwd=ws, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((ws / "runs" / "toy" / "distill" / "record.json").read_text())["metrics"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs" / "scale"))
    ap.add_argument("--views", type=int, default=120)
    args = ap.parse_args()
    ws = Path(args.workspace)
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / "toy.yaml", ws / "configs" / "toy.yaml")
    for stage in ("data", "teacher"):  # cached after the first run
        subprocess.run([sys.executable, "-m", "pipeline", "stage", stage, "configs/toy.yaml"], cwd=ws, check=True,
                       stdout=subprocess.DEVNULL)
    cores = os.cpu_count() or 1
    one = _run(ws, 1, args.views, cores)
    two = _run(ws, 2, args.views, max(cores // 2, 1))
    v1, v2 = one["views_per_s"], two["views_per_s"]
    width, height = one["size"]
    print(f"\ndistill, toy teacher, {args.views} views at {width}x{height}, {cores} cores, "
          f"{'CUDA' if torch.cuda.is_available() else 'CPU'}")
    print(f"{'ranks':>6}{'threads/rank':>14}{'views/s':>10}{'speed-up':>10}")
    print(f"{1:>6}{cores:>14}{v1:>10.2f}{1.0:>10.2f}")
    print(f"{2:>6}{max(cores // 2, 1):>14}{v2:>10.2f}{v2 / v1:>10.2f}")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        print(f"projected with {n} GPUs: {v1 * n:.1f} views/s ({v1:.2f} per GPU, ranks render disjoint views)")
    else:
        print("no GPU here: on N GPUs expect about N x the one-GPU rate (disjoint views, no communication "
              "until the final barrier); run this script on a GPU machine for the per-GPU figure")
    print(json.dumps({"views_per_s_1rank": round(v1, 3), "views_per_s_2ranks": round(v2, 3),
                      "speedup": round(v2 / v1, 3), "cores": cores,
                      "machine": describe("cuda" if torch.cuda.is_available() else "cpu")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
