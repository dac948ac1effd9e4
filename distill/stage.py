"""Stage 3: render pseudo-views from the trained teacher (MobileR2L-style poses).

Poses: camera centres on the sphere band of the training cameras (radius
and elevation ranges taken from them), looking at the scene centre, roll-free;
optionally a share of jittered training poses. The pose list is generated up
front from the seed, so a resumed run renders exactly the missing views.
Views are written as `pseudo/NNNNN.png` (atomic rename, so a file that exists
is complete) and `transforms.json` in the Blender layout at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import distributed, faults
from pipeline.cameras import Intrinsics, camera_directions, pinhole_rays, student_frame
from pipeline.errors import StageError
from pipeline.io import atomic_write_bytes, atomic_write_json, png_bytes
from pipeline.progress import progress
from pipeline.scene import background_rgb, load_split
from teacher.malloc_tuning import release_freed, tune_malloc
from teacher.model import load_teacher
from teacher.render import render_image, render_march

from .poses import forward_distribution, pose_distribution, sample_forward_poses, sample_poses

# views between two hand-backs of the heap's freed pages (teacher/malloc_tuning.py): a view of a
# scene with surroundings can leave 100 MB of fragments, and a hand-back costs a fifth of a view
RELEASE_EVERY = 8


def png_bytes_upper_bound(width: int, height: int) -> int:
    """Most bytes an 8-bit RGB PNG of width x height can take: raw rows (a filter byte each),
    deflate's stored-block overhead (5 bytes per 64 KiB) and the chunk headers."""
    raw = height * (3 * width + 1)
    return raw + 5 * (raw // 65535 + 1) + 1024


def check_disk_space(ctx, n_missing: int, width: int, height: int) -> None:
    """Refuse up front rather than fill the disk half-way through distilling."""
    need = n_missing * png_bytes_upper_bound(width, height)
    free = faults.free_bytes(ctx.out_dir)
    if need > free:
        raise StageError(
            f"not enough disk space for distill.n_views={ctx.cfg.distill.n_views}: {n_missing} views of "
            f"{width}x{height} px need up to {_mb(need)} in {ctx.out_dir}, but only {_mb(free)} are free; "
            "free some space, lower distill.n_views, or set runs_dir to a larger disk")


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def _missing(folder: Path, n: int) -> int:
    return sum(not (folder / f"{k:05d}.png").exists() for k in range(n))


def _render_views(ctx, field, estimator, poses, cameras: list[Intrinsics], folder: Path, march, desc: str,
                  deadline: float | None = None) -> int:
    """Render views k of (poses[k], cameras[k]) not yet in `folder` (this rank's share), until
    `deadline` (time.time()) if given, one view at least; how many."""
    dev = ctx.device
    bg = background_rgb(ctx.cfg.background).to(dev)
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    # under torchrun, rank r renders views r, r + world, ...: disjoint, deterministic
    # slices, so any number of ranks writes the same files as one process
    mine = range(distributed.rank(), len(poses), distributed.world_size())
    for k in progress(mine, desc=desc, unit="view", disable=not distributed.is_main()):
        path = folder / f"{k:05d}.png"
        if path.exists():
            continue  # complete by construction (atomic rename)
        if deadline is not None and done and time.time() >= deadline:
            break
        c2w = torch.as_tensor(poses[k], dtype=torch.float32, device=dev)
        rays_o, rays_d = pinhole_rays(c2w, camera_directions(cameras[k], dev))
        img, _ = render_image(field, estimator, rays_o, rays_d, bg, march, chunk=ctx.cfg.distill.chunk_rays)
        atomic_write_bytes(path, png_bytes(img))
        done += 1
        if done % RELEASE_EVERY == 0:
            release_freed()
        faults.delay()
    return done


def _transforms(poses: np.ndarray, cameras: list[Intrinsics], folder: str, index: list[int] | None = None) -> dict:
    """A transforms file in the Blender layout, with each frame's own intrinsics (nerfstudio's
    keys); `camera_angle_x` of the first view too, for tools that read only that. index: each
    view's file number (default 0, 1, ...)."""
    return {"camera_angle_x": cameras[0].camera_angle_x,
            "frames": [{"file_path": f"{folder}/{k:05d}", "transform_matrix": p.tolist(), **cam.to_json()}
                       for k, p, cam in zip(index or range(len(poses)), poses, cameras, strict=True)]}


def _scene_type(placement_json: Path) -> str:
    """The data stage's scene type (an older placement.json: an object)."""
    try:
        return json.loads(placement_json.read_text()).get("scene_type", "object")
    except (OSError, ValueError):
        return "object"


def run(ctx) -> dict:
    tune_malloc()
    cfg, dcfg = ctx.cfg, ctx.cfg.distill
    root = ctx.input("data", "scene")
    train = load_split(root, "train", cfg.data.downscale)
    test = load_split(root, "test", cfg.data.downscale)
    # the teacher's own switches (model.pt): every rank, and every machine, renders the same way
    field, estimator, switches = load_teacher(ctx.input("teacher", "model"), cfg.teacher, ctx.device)
    for key, choice in switches.items():
        ctx.log(f"{key}: {choice.value} ({choice.reason})")
    # one pinhole camera for every pseudo-view, which the student bakes into its graph: the photos'
    # median one, at student.output_size on the long side (for a Blender scene, its own camera)
    camera = student_frame(train.intrinsics, cfg.student.output_size, cfg.student.arch.frame_multiple)
    ctx.log(f"pseudo-view camera: {camera.width}x{camera.height} px, fx {camera.fx:.1f} fy {camera.fy:.1f}, "
            f"principal point ({camera.cx:.1f}, {camera.cy:.1f})")
    # the teacher at the test poses through the student's camera: student and teacher compare
    # like for like (for a Blender scene this is each test view's own camera)
    test_cameras = [camera] * len(test.c2w)
    aabb = np.array(cfg.teacher.aabb)
    train_c2w = train.c2w.numpy().astype(np.float64)
    dist = pose_distribution(train_c2w, (aabb[:3] + aabb[3:]) / 2)
    scene_type = _scene_type(ctx.input("data", "placement"))
    # what downstream stages know of the scene's geometry
    scene_geometry = {**dist, "aabb": aabb.tolist(), "scene_type": scene_type}
    if scene_type == "forward":
        # a forward-facing scene is seen from where its photos were taken, not from an orbit
        region = forward_distribution(train_c2w)
        scene_geometry["region"] = region
        poses = sample_forward_poses(dcfg.n_views, dcfg.seed, train_c2w, region)
        ctx.log(f"forward-facing: pseudo-views in the photos' region (turning up to {region['turn_deg']:.1f} deg)")
    else:
        poses = sample_poses(dcfg.n_views, dcfg.seed, train_c2w, dist, dcfg.jitter_fraction, dcfg.jitter_deg)
    march = render_march(cfg, field.space)
    test_poses = test.c2w.numpy().astype(np.float64)
    missing = _missing(ctx.out_dir / "pseudo", len(poses))
    check_disk_space(ctx, missing + _missing(ctx.out_dir / "test", len(test_poses)), camera.width, camera.height)
    if missing < len(poses):
        ctx.log(f"resuming: {len(poses) - missing} of {len(poses)} views already written")
    t0 = time.time()
    cameras_all = [camera] * len(poses)
    deadline = t0 + dcfg.max_seconds if dcfg.max_seconds > 0 else None
    rendered = _render_views(ctx, field, estimator, poses, cameras_all, ctx.out_dir / "pseudo", march, "distill",
                             deadline)
    # every rank's share of the views, and the slowest rank's time
    shares = distributed.gather((rendered, time.time() - t0))
    rendered, seconds = sum(r for r, _ in shares), max(t for _, t in shares)
    distributed.barrier()
    # the time budget may end the set early: it holds the views written, in their order
    index = [k for k in range(len(poses)) if (ctx.out_dir / "pseudo" / f"{k:05d}.png").exists()]
    if len(index) < len(poses):
        ctx.log(f"distill.max_seconds={dcfg.max_seconds:g} ended rendering: {len(index)} of {dcfg.n_views} views")
        if not index:
            raise StageError(f"distill.max_seconds={dcfg.max_seconds:g} ended rendering before the first view; "
                             "raise distill.max_seconds")
    # the teacher's renders of the real test cameras, so the student can be compared with its teacher
    _render_views(ctx, field, estimator, test_poses, test_cameras, ctx.out_dir / "test", march, "distill test")
    distributed.barrier()  # every view exists before rank 0 declares the set complete
    if distributed.is_main():
        atomic_write_json(ctx.out_dir / "transforms_test.json", _transforms(test_poses, test_cameras, "test"))
        atomic_write_json(ctx.out_dir / "cameras.json", scene_geometry)
        atomic_write_json(ctx.out_dir / "transforms.json",
                          _transforms(poses[index], [camera] * len(index), "pseudo", index))
    metrics = {"n_views": len(index), "n_views_asked": dcfg.n_views, "rendered_now": rendered,
               "size": [camera.width, camera.height],
               "world_size": distributed.world_size(),
               "render_seconds": round(seconds, 2),
               "views_per_s": round(rendered / seconds, 3) if rendered and seconds > 0 else None,
               "pose_distribution": dist}
    if distributed.is_main():
        atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    return {"metrics": metrics, "outputs": {"views": "transforms.json", "test_views": "transforms_test.json",
                                            "cameras": "cameras.json", "metrics": "metrics.json"},
            "resolved": {key: choice.value for key, choice in switches.items()}}
