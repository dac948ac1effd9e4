"""Stage 6: results people can look at, written into the viewer site.

For the exported scene, into `<site_dir>/scenes/<name>/report/` (read by `site/compare.html`)
and the stage folder:
- turntables: a 360-degree orbit of the student (MP4 + a small animated GIF for READMEs); for a
  forward-facing scene, a loop through the region its photos span instead
  and, at low resolution, of the teacher (MP4);
- every test view as ground truth | teacher | student PNGs, with the per-view figures of
  the student stage's metrics.json (the page shows exactly those numbers);
- `report.json`: views, loss/PSNR curves of teacher and student (step and wall time),
  the model card of scene.json, and the turntable files.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from export import site_format
from pipeline.cameras import Intrinsics, camera_directions, orbit_pose, pinhole_rays
from pipeline.errors import StageError
from pipeline.io import atomic_write_bytes, atomic_write_json, png_bytes, read_json, to_uint8
from pipeline.progress import progress
from pipeline.scene import background_rgb, photos_at
from student.kinds import load_student
from teacher.model import load_teacher
from teacher.render import render_image, render_march


def region_loop_poses(region: dict, n_frames: int) -> list[np.ndarray]:
    """n_frames poses of a forward-facing scene's region camera (scene.json's `region`) on the
    ellipse inscribed in the region's extent across the view (x, y) at the start's depth: the
    parallax the photos support, looking where the viewer looks."""
    lo, hi = (np.asarray(v, dtype=np.float64) for v in region["extent"])
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    z = float(region["start"][2])
    return [site_format.region_pose(region, [mid[0] + half[0] * math.cos(a), mid[1] + half[1] * math.sin(a), z])
            for a in (2 * math.pi * k / n_frames for k in range(n_frames))]


def turntable_poses(orbit: dict, up: list[float], n_frames: int) -> list[np.ndarray]:
    """n_frames poses around the orbit target at the default radius and elevation,
    starting at the default azimuth (frame 0 is the viewer's default view)."""
    return [orbit_pose(orbit["target"], orbit["radius"], orbit["azimuth_deg"] + 360.0 * k / n_frames,
                       orbit["elevation_deg"], up) for k in range(n_frames)]


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """MP4 (H.264, yuv420p, via the ffmpeg binary of imageio-ffmpeg), written atomically. yuv420p
    needs even sides: a frame with an odd side gets its last row or column repeated."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    try:
        # macro_block_size=1: keep the exact size (even, as yuv420p needs)
        iio2.mimwrite(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", quality=9,
                      macro_block_size=1, ffmpeg_log_level="error")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_gif(path: Path, frames: list[np.ndarray], fps: int, size: int) -> None:
    """A looping GIF of `frames` downscaled to `size` px on the long side (area filter)."""
    h, w = frames[0].shape[:2]
    out = (max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w))))
    small = [F.interpolate(torch.from_numpy(f).permute(2, 0, 1)[None].float(), size=out, mode="area")[0]
             .permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy() for f in frames]
    atomic_write_bytes(path, iio.imwrite("<bytes>", np.stack(small), extension=".gif",
                                         duration=1000 / fps, loop=0))


@torch.no_grad()
def student_frames(model, poses: list[np.ndarray]) -> list[np.ndarray]:
    return [to_uint8(model(torch.from_numpy(p).float())[0].permute(1, 2, 0))
            for p in progress(poses, desc="report: student turntable", unit="frame", leave=False)]


@torch.no_grad()
def teacher_frames(ctx, poses: list[np.ndarray], camera: Intrinsics) -> list[np.ndarray]:
    cfg = ctx.cfg
    field, estimator, _ = load_teacher(ctx.input("teacher", "model"), cfg.teacher, ctx.device)
    march = render_march(cfg, field.space)
    dirs = camera_directions(camera, ctx.device)
    bg = background_rgb(cfg.background).to(ctx.device)
    out = []
    for p in progress(poses, desc="report: teacher turntable", unit="frame", leave=False):
        rays_o, rays_d = pinhole_rays(torch.as_tensor(p, dtype=torch.float32, device=ctx.device), dirs)
        img, _ = render_image(field, estimator, rays_o, rays_d, bg, march, chunk=cfg.distill.chunk_rays)
        out.append(to_uint8(img))
    return out


def _curve(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [{k: r[k] for k in ("step", "seconds", "loss", "psnr") if k in r} for r in rows]


def run(ctx) -> dict:
    cfg, rcfg = ctx.cfg, ctx.cfg.report
    t0 = time.time()
    scene_dir = ctx.input("export", "scene")
    scene = site_format.read(scene_dir / "scene.json", "scene", "re-run `python -m pipeline stage export --force`")
    report_json = scene_dir / scene.get("report", site_format.REPORT_FILE)  # where the viewer looks for it
    report_dir = report_json.parent
    model = load_student(ctx.input("student", "model"), torch.device("cpu"))
    cam = model.camera
    size = max(cam.width, cam.height)

    # Turntables
    if "region" in scene:  # forward-facing: a loop inside what the photos cover
        poses = region_loop_poses(scene["region"], rcfg.turntable_frames)
    else:
        poses = turntable_poses(scene["orbit"], scene["up"], rcfg.turntable_frames)
    frames = student_frames(model, poses)
    files = {"student_mp4": "turntable_student.mp4", "student_gif": "turntable_student.gif"}
    write_video(report_dir / files["student_mp4"], frames, rcfg.fps)
    write_gif(report_dir / files["student_gif"], frames, rcfg.fps, min(rcfg.gif_size, size))
    if rcfg.teacher_turntable_size > 0:
        # the student's camera with teacher_turntable_size pixels on the long side
        scale = rcfg.teacher_turntable_size / size
        t_frames = teacher_frames(ctx, poses, cam.intrinsics.resized(max(1, round(cam.width * scale)),
                                                                     max(1, round(cam.height * scale))))
        files["teacher_mp4"] = "turntable_teacher.mp4"
        write_video(report_dir / files["teacher_mp4"], t_frames, rcfg.fps)
    for name in files.values():  # the run folder keeps its own copy of the videos
        atomic_write_bytes(ctx.out_dir / name, (report_dir / name).read_bytes())

    # Test views: ground truth | teacher | student, with the student stage's own figures
    metrics = read_json(ctx.input("student", "metrics"))
    per_view = metrics["per_view"]
    test, gt, _ = photos_at(ctx.input("data", "scene"), "test", cfg.data.downscale, cfg.background, cam.intrinsics)
    names = {r["view"]: k for k, r in enumerate(per_view)}
    if len(per_view) != len(test.names) or any(n not in names for n in test.names):
        raise StageError(f"{ctx.input('student', 'metrics')}: its test views differ from the scene's; "
                         "re-run `python -m pipeline stage student --force`")
    teacher_views = ctx.input("distill", "test_views")
    teacher_files = [teacher_views.parent / f"{fr['file_path']}.png" for fr in read_json(teacher_views)["frames"]]
    views = []
    with torch.no_grad():
        for k in progress(range(len(test.names)), desc="report: test views", unit="view", leave=False):
            name = test.names[k]
            row = per_view[names[name]]
            teacher_png = teacher_files[k].read_bytes()
            student = to_uint8(model(test.c2w[k])[0].permute(1, 2, 0))
            stem = f"views/{k:05d}"
            atomic_write_bytes(report_dir / f"{stem}_gt.png", png_bytes(gt[k]))
            atomic_write_bytes(report_dir / f"{stem}_teacher.png", teacher_png)
            atomic_write_bytes(report_dir / f"{stem}_student.png", iio.imwrite("<bytes>", student, extension=".png"))
            views.append({"view": name, "gt": f"{stem}_gt.png", "teacher": f"{stem}_teacher.png",
                          "student": f"{stem}_student.png", "psnr": row["psnr"], "ssim": row["ssim"],
                          "teacher_psnr": row["teacher_psnr"], "psnr_vs_teacher": row["psnr_vs_teacher"]})

    report = site_format.report_document(
        name=cfg.name,
        width=cam.width, height=cam.height,
        summary={k: metrics[k] for k in ("psnr", "ssim", "psnr_vs_teacher", "teacher_psnr", "baseline_psnr")},
        teacher_stage={k: read_json(ctx.input("teacher", "metrics")).get(k)
                       for k in ("psnr", "ssim", "steps", "train_seconds")},
        model_card=scene.get("model_card", {}),
        curves={"teacher": _curve(ctx.input("teacher", "curve")), "student": _curve(ctx.input("student", "curve"))},
        turntable={**files, "frames": rcfg.turntable_frames, "fps": rcfg.fps, "size": size,
                   "teacher_size": rcfg.teacher_turntable_size},
        views=views,
    )
    site_format.write(report_json, report, "report")  # checked, and last: the page reads it
    out = {"n_views": len(views), "turntable_frames": rcfg.turntable_frames, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(ctx.out_dir / "metrics.json", out)
    ctx.log(f"{len(views)} test views and turntables -> {report_dir}; "
            f"open compare.html on the served site")
    return {"metrics": out, "outputs": {"report": str(report_dir), "metrics": "metrics.json"}}
