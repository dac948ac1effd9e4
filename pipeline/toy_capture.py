"""The toy scene (pipeline/toy_scene.py) written as a capture in every layout the data stage reads:
nerfstudio, instant-ngp, COLMAP (text model), LLFF, each from the same cameras, so that tests
can check that every reader gives back the rays the images were rendered with. No downloads.

Each frame is ray-cast through its camera's lens (`camera_directions`, distortion included),
so a distorted camera's photos are what that lens would take. Photos are RGB PNGs (lossless, so
tests can compare pixels); with `masks`, the toy's alpha is written as a mask beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .cameras import Intrinsics, camera_directions
from .config import ToySceneConfig
from .toy_scene import BOX_MAX, BOX_MIN, SPHERES, cast, split_poses, toy_bounds

LAYOUTS = ("nerfstudio", "instant-ngp", "colmap", "llff")


def toy_camera(cfg: ToySceneConfig) -> Intrinsics:
    """The toy scene's own camera (square, centred, the configured field of view)."""
    return Intrinsics.from_fov(cfg.size, cfg.size, cfg.camera_angle_x)


def render(c2w: np.ndarray, camera: Intrinsics) -> np.ndarray:
    """RGBA (height, width, 4) float64 in [0, 1] of the toy scene through `camera` (its lens too)."""
    d = camera_directions(camera).double().numpy().reshape(-1, 3) @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rgb, alpha = cast(np.broadcast_to(c2w[:3, 3], d.shape), d)
    rgba = np.concatenate([rgb * alpha[:, None], alpha[:, None]], -1)
    return rgba.reshape(camera.height, camera.width, 4)


def toy_frames(cfg: ToySceneConfig) -> list[tuple[str, str, np.ndarray]]:
    """(split, name, c2w) of every toy frame, named `<split>_<index>` (000, 001, ...)."""
    return [(split, f"{split}_{k:03d}", c2w) for split, poses in split_poses(cfg).items()
            for k, c2w in enumerate(poses)]


def surface_points(n: int = 400, seed: int = 0) -> np.ndarray:
    """(n, 3) points on the toy geometry's surfaces (a stand-in for COLMAP's sparse points)."""
    rng = np.random.default_rng(seed)
    per = n // (len(SPHERES) + 1)
    pts = []
    for centre, radius, _, _ in SPHERES:
        v = rng.normal(size=(per, 3))
        pts.append(centre + radius * v / np.linalg.norm(v, axis=-1, keepdims=True))
    p = rng.uniform(BOX_MIN, BOX_MAX, size=(n - per * len(SPHERES), 3))
    axis = rng.integers(0, 3, len(p))
    p[np.arange(len(p)), axis] = np.where(rng.random(len(p)) < 0.5, BOX_MIN[axis], BOX_MAX[axis])
    pts.append(p)
    return np.concatenate(pts)


def write_toy_capture(cfg: ToySceneConfig, root: Path, layout: str, camera: Intrinsics | None = None,
                      masks: bool = False, sparse_points: bool = False, ngp_scale: float = 0.5,
                      ngp_offset=(0.1, 0.2, 0.3)) -> dict:
    """Render the toy scene into `root` as a capture in `layout` (one of LAYOUTS).

    camera: every frame's camera (default: the toy's own); LLFF keeps a square-pixel, centred
    camera only, COLMAP and nerfstudio any (OPENCV when it has distortion).
    masks: write the toy's alpha as foreground masks (nerfstudio: mask_path; others: masks/).
    sparse_points: nerfstudio: also write points on the toy's surfaces as ns-process-data's
    `ply_file_path` (COLMAP models always have the same points).
    ngp_scale, ngp_offset: the `scale` and `offset` an instant-ngp file states (its poses are
    written in the toy's world, which instant-ngp itself maps by p * scale + offset).
    Returns {name: (split, c2w (4, 4) in the toy's world, Intrinsics)}, the truth the images show.
    """
    camera = camera or toy_camera(cfg)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    truth = {}
    for split, name, c2w in toy_frames(cfg):
        rgba = np.round(render(c2w, camera) * 255).astype(np.uint8)
        iio.imwrite(root / "images" / f"{name}.png", rgba[..., :3])
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            iio.imwrite(root / "masks" / f"{name}.png", rgba[..., 3])
        truth[name] = (split, c2w, camera)
    names = sorted(truth)
    if layout in ("nerfstudio", "instant-ngp"):
        frames = [{"file_path": f"images/{n}.png", "transform_matrix": truth[n][1].tolist()} for n in names]
        if masks:
            for fr, n in zip(frames, names, strict=True):
                fr["mask_path"] = f"masks/{n}.png"
        if layout == "nerfstudio":
            # one camera for every frame, at the top level, as ns-process-data writes it
            meta = {**camera.to_json(), "camera_model": "PINHOLE" if camera.is_pinhole else "OPENCV"}
            for split in ("train", "val", "test"):
                meta[f"{split}_filenames"] = [f"images/{n}.png" for n in names if truth[n][0] == split]
            if sparse_points:  # as ns-process-data writes them (ASCII PLY), the COLMAP model's points
                pts = surface_points()
                header = (f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\n"
                          "property float z\nproperty uint8 red\nproperty uint8 green\nproperty uint8 blue\n"
                          "end_header\n")
                (root / "sparse_pc.ply").write_text(header + "".join(
                    f"{' '.join(repr(float(v)) for v in p)} 128 128 128\n" for p in pts))
                meta["ply_file_path"] = "sparse_pc.ply"
        else:
            # instant-ngp's own keys: a field of view, its scene placement
            meta = {"camera_angle_x": camera.camera_angle_x, "w": camera.width, "h": camera.height,
                    "cx": camera.cx, "cy": camera.cy, "aabb_scale": 1, "scale": ngp_scale,
                    "offset": list(ngp_offset)}
            meta |= {k: v for k, v in zip(("k1", "k2", "k3", "p1", "p2"), camera.distortion, strict=True) if v}
            if camera.fy != camera.fx:
                meta["fl_y"] = camera.fy
        (root / "transforms.json").write_text(json.dumps({**meta, "frames": frames}, indent=1))
    elif layout == "colmap":
        _write_colmap_text(root / "sparse" / "0", names, truth, camera)
    elif layout == "llff":
        assert camera.fx == camera.fy and camera.cx == camera.width / 2 and camera.cy == camera.height / 2, \
            "LLFF's cameras are square-pixel and centred"
        lo, hi = toy_bounds()
        reach = float(np.linalg.norm(np.maximum(np.abs(lo), np.abs(hi))))  # a sphere about the origin holding it
        rows = []
        for n in names:
            c2w = truth[n][1]
            down_right_back = np.stack([-c2w[:3, 1], c2w[:3, 0], c2w[:3, 2]], 1)
            hwf = [camera.height, camera.width, camera.fx]
            pose = np.concatenate([down_right_back, c2w[:3, 3:], np.array(hwf)[:, None]], 1)
            depth = float(np.linalg.norm(c2w[:3, 3]))
            rows.append(np.concatenate([pose.reshape(-1), [depth - reach, depth + reach]]))
        np.save(root / "poses_bounds.npy", np.stack(rows))
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return truth


def _quaternion(rot: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion of a rotation matrix (Shepperd's method, COLMAP's order)."""
    m = rot
    t = np.trace(m)
    if t > 0:
        s = 2 * np.sqrt(1 + t)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2 * np.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2 * np.sqrt(1 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2 * np.sqrt(1 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def _write_colmap_text(model: Path, names: list[str], truth: dict, camera: Intrinsics) -> None:
    """COLMAP's text model: one camera, every image's world-to-camera pose (OpenCV), surface points."""
    model.mkdir(parents=True, exist_ok=True)
    c = camera
    if c.is_pinhole:
        params = f"PINHOLE {c.width} {c.height} {c.fx!r} {c.fy!r} {c.cx!r} {c.cy!r}"
    else:
        assert c.k3 == 0, "COLMAP's OPENCV model has no k3"
        params = (f"OPENCV {c.width} {c.height} {c.fx!r} {c.fy!r} {c.cx!r} {c.cy!r} {c.k1!r} {c.k2!r} {c.p1!r} "
                  f"{c.p2!r}")
    (model / "cameras.txt").write_text(f"# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]\n1 {params}\n")
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then POINTS2D[]"]
    for k, n in enumerate(names):
        c2w_cv = truth[n][1] @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL -> OpenCV camera axes
        w2c = np.linalg.inv(c2w_cv)
        q, t = _quaternion(w2c[:3, :3]), w2c[:3, 3]
        lines += [" ".join([str(k + 1), *(repr(float(v)) for v in (*q, *t)), "1", f"{n}.png"]), ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    pts = surface_points()
    (model / "points3D.txt").write_text("".join(f"{k + 1} {' '.join(repr(float(v)) for v in p)} 128 128 128 0.5\n"
                                                for k, p in enumerate(pts)))
