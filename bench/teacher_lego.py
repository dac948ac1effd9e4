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

from lego_workspace import add_arguments, run_pipeline

from pipeline.machine import short

TARGET_PSNR = 31.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--budget", type=float, default=1200.0, help="teacher training seconds")
    args = ap.parse_args()
    ws = run_pipeline(args, [["stage", "data"], ["stage", "teacher"]], [f"teacher.max_seconds={args.budget}"])
    if ws is None:
        return 2
    rec = json.loads((ws / "runs" / "lego" / "teacher" / "record.json").read_text())
    m = rec["metrics"]
    print()
    print(f"machine: {short(rec['machine'])}; {', '.join(f'{k}={v}' for k, v in rec['resolved'].items())}")
    print(f"{'scene':<10}{'steps':>8}{'train s':>10}{'PSNR dB':>10}{'SSIM':>8}{'target':>10}")
    print(f"{'lego 200':<10}{m.get('steps', 0):>8}{m['train_seconds']:>10.0f}{m['psnr']:>10.2f}{m['ssim']:>8.4f}"
          f"{'>= ' + str(TARGET_PSNR):>10}  {'met' if m['psnr'] >= TARGET_PSNR else 'MISSED'}")
    print(json.dumps({"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4),
                      "train_seconds": m["train_seconds"], "steps": m.get("steps"), "n_views": m["n_views"],
                      "resolved": rec.get("resolved"), "machine": rec.get("machine")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
