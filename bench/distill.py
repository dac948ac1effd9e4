"""Distillation speed: pseudo-views per second rendered by a trained teacher.

Uses the teacher of a finished run (default: the lego run that
bench/teacher_lego.py leaves in bench_runs/) and renders `--views` poses from
the distill pose distribution at 100x100 and 200x200, forward-only, exactly as
the distill stage does (same sampler, early ray termination and alpha
threshold). Prints a table and, last, one JSON line with `views_per_s_100`,
`views_per_s_200`. Target (2 cores): 2,000 views at 100x100 in <= 5 minutes,
i.e. >= 6.67 views/s.

    python bench/distill.py [--workspace bench_runs] [--config lego] [--views 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.poses import pose_distribution, sample_poses  # noqa: E402
from pipeline.cameras import camera_directions, pinhole_rays, student_frame  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.machine import describe  # noqa: E402
from pipeline.scene import background_rgb, load_split  # noqa: E402
from teacher.malloc_tuning import tune_malloc  # noqa: E402
from teacher.model import load_teacher  # noqa: E402
from teacher.render import render_image, render_march  # noqa: E402

TARGET_VIEWS_PER_S_100 = 2000 / 300


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs"))
    ap.add_argument("--config", default="lego", help="config name inside the workspace's configs/")
    ap.add_argument("--views", type=int, default=30, help="views per size")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tune_malloc()
    ws = Path(args.workspace)
    cfg_path = ws / "configs" / f"{args.config}.yaml"
    record_path = ws / "runs" / args.config / "data" / "record.json"
    model_path = ws / "runs" / args.config / "teacher" / "model.pt"
    if not (cfg_path.exists() and record_path.exists() and model_path.exists()):
        print(f"error: no finished teacher in {ws} (run bench/teacher_lego.py first)", file=sys.stderr)
        return 2
    root = Path(json.loads(record_path.read_text())["outputs"]["scene"])
    cfg = load_config(cfg_path, [f"data.root={root}"])
    dev = torch.device("cpu")
    field, estimator, _ = load_teacher(model_path, cfg.teacher, dev)
    train = load_split(root, "train", cfg.data.downscale)
    aabb = np.array(cfg.teacher.aabb)
    c2w = train.c2w.numpy().astype(np.float64)
    dist = pose_distribution(c2w, (aabb[:3] + aabb[3:]) / 2)
    poses = sample_poses(args.views + 1, 0, c2w, dist, 0.0, 0.0)
    march = render_march(cfg, field.space)
    bg = background_rgb(cfg.background)
    rows = {}
    for size in (100, 200):
        dirs = camera_directions(student_frame(train.intrinsics, size, 1))
        times, samples = [], []
        for k, pose in enumerate(poses):
            rays_o, rays_d = pinhole_rays(torch.as_tensor(pose, dtype=torch.float32), dirs)
            t0 = time.perf_counter()
            _, n = render_image(field, estimator, rays_o, rays_d, bg, march, chunk=cfg.distill.chunk_rays)
            if k:  # the first view warms up (and compiles, if configured)
                times.append(time.perf_counter() - t0)
                samples.append(n / size / size)
        per_view = float(np.median(times))
        rows[size] = {"s_per_view": per_view, "views_per_s": 1 / per_view, "pixels_per_s": size * size / per_view,
                      "samples_per_pixel": float(np.mean(samples))}
    print(f"\nteacher {model_path} (compile={cfg.teacher.compile}, bf16 MLPs={cfg.teacher.mlp_bf16}), "
          f"{args.threads} threads, {args.views} views per size, median")
    print(f"{'size':>8}{'s/view':>10}{'views/s':>10}{'Mpix/s':>10}{'samples/px':>12}")
    for size, r in rows.items():
        print(f"{size:>5}x{size:<3}{r['s_per_view']:>9.3f}{r['views_per_s']:>10.2f}{r['pixels_per_s'] / 1e6:>10.3f}"
              f"{r['samples_per_pixel']:>12.1f}")
    v100 = rows[100]["views_per_s"]
    print(f"2,000 views at 100x100: {2000 / v100 / 60:.1f} min (target <= 5 min: "
          f"{'met' if v100 >= TARGET_VIEWS_PER_S_100 else 'MISSED'})")
    print(json.dumps({"views_per_s_100": round(v100, 3), "views_per_s_200": round(rows[200]["views_per_s"], 3),
                      "samples_per_pixel_100": round(rows[100]["samples_per_pixel"], 2), "machine": describe(dev)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
