"""Teacher quality under a wall-clock budget on lego 200x200 (the CPU profile).

Runs the pipeline's data and teacher stages of configs/lego.yaml in a
workspace of its own (default bench_runs/, cached like any run: a finished
run with the same settings is read back, not retrained), then prints a table
and, last, one JSON line with `psnr`, `ssim`, `train_seconds`.

    python bench/teacher_lego.py [--scene ../shared/data/nerf_synthetic_200/lego] [--budget 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_PSNR = 31.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(ROOT.parent / "shared/data/nerf_synthetic_200/lego"))
    ap.add_argument("--budget", type=float, default=1200.0, help="teacher training seconds")
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    scene = Path(args.scene).resolve()
    if not (scene / "transforms_train.json").is_file():
        print(f"error: lego scene not found at {scene} (--scene PATH)", file=sys.stderr)
        return 2
    ws = Path(args.workspace)
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / "lego.yaml", ws / "configs" / "lego.yaml")
    sets = [f"data.root={scene}", f"teacher.max_seconds={args.budget}", *args.overrides]
    cmd = [sys.executable, "-m", "pipeline", "stage", "teacher", "configs/lego.yaml"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for stage in ("data", "teacher"):
        cmd[4] = stage
        subprocess.run(cmd, cwd=ws, check=True, env=env)
    rec = json.loads((ws / "runs" / "lego" / "teacher" / "record.json").read_text())
    m = rec["metrics"]
    print()
    print(f"{'scene':<10}{'steps':>8}{'train s':>10}{'PSNR dB':>10}{'SSIM':>8}{'target':>10}")
    print(f"{'lego 200':<10}{m.get('steps', 0):>8}{m['train_seconds']:>10.0f}{m['psnr']:>10.2f}{m['ssim']:>8.4f}"
          f"{'>= ' + str(TARGET_PSNR):>10}  {'met' if m['psnr'] >= TARGET_PSNR else 'MISSED'}")
    print(json.dumps({"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4),
                      "train_seconds": m["train_seconds"], "steps": m.get("steps"), "n_views": m["n_views"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
