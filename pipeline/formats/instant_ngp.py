"""instant-ngp's `transforms.json` (its `scripts/colmap2nerf.py` writes it; `src/nerf_loader.cu`
reads it).

The file nerfstudio's format grew from, with instant-ngp's own keys: a focal length as
`x_fov`/`y_fov` (degrees), `fl_x`/`fl_y` (pixels) or `camera_angle_x`/`camera_angle_y`
(radians), in that order of precedence, at the top level and overridden per frame; `cx`, `cy`
in pixels of `w` x `h`; an OpenCV lens `k1 k2 p1 p2` (k3 is read as OpenCV's k3; fisheye,
f-theta and panoramic lenses are refused). Frames are in natural file-name order, as
instant-ngp sorts them; every 8th is a test view (or nerfstudio's split lists, when present).

`scale` (default 0.33), `offset` (default 0.5 on each axis) and `aabb_scale` place the scene
in instant-ngp's own frame: it maps a camera position p to p * scale + offset, cycles the axes
(x, y, z <- y, z, x) and flips the camera's y and z, and trains in the cube of side `aabb_scale`
centred at 0.5 (`aabb`, when given, sets scale and offset so that box's longest side is 1 and its
centre 0.5). We record the three values (and that cube in the file's coordinates) but keep the
poses in the file's coordinates: the placement that follows (pipeline/placement.py) is the same
for a scene moved, turned or scaled as a whole, so applying instant-ngp's map first would place
the scene in exactly the same spot, and without it the recorded transform maps the coordinates
the file states, as it does for every other layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cameras import Intrinsics, focal_from_fov
from ..errors import DataError
from . import Capture, build_splits, natural_key, number, read_json
from .nerfstudio import frame_entries, make_frame, resolve, split_entries

NERF_SCALE = 0.33  # instant-ngp's default `scale` (include/neural-graphics-primitives/nerf_loader.h)
NERF_OFFSET = (0.5, 0.5, 0.5)  # its default `offset`
UNSUPPORTED_LENSES = ("is_fisheye", "ftheta_p0", "latlong", "equirectangular")


def read(root: Path) -> Capture:
    path = root / "transforms.json"
    meta = read_json(path)
    entries = frame_entries(path, meta, sort_key=lambda fr: natural_key(fr["file_path"].replace("\\", "/")))
    for where, node in [("", meta)] + [(f"frames[{k}].", fr) for k, fr in enumerate(meta["frames"])]:
        for key in UNSUPPORTED_LENSES:
            if node.get(key):
                raise DataError(f"{path}: '{where}{key}' asks for a lens that is not supported; expected a "
                                "perspective camera with OpenCV distortion (k1 k2 p1 p2)")
    scale, offset = placement_keys(path, meta)
    aabb_scale = meta.get("aabb_scale", 1)
    by_split = split_entries(path, meta, entries)
    splits, missing = build_splits(by_split, lambda e: resolve(root, e[1]["file_path"]),
                                   lambda e, image: make_frame(path, meta, e, image, intrinsics))
    # instant-ngp's training cube, [0.5 - aabb_scale / 2, 0.5 + aabb_scale / 2]^3 in its frame, in the file's
    lo, hi = (0.5 - 0.5 * aabb_scale - offset) / scale, (0.5 + 0.5 * aabb_scale - offset) / scale
    source = {"scale": scale, "offset": offset.tolist(), "aabb_scale": aabb_scale,
              "ngp_box": [*lo.tolist(), *hi.tolist()]}
    return Capture("instant-ngp", root, splits, files=[path], source=source, missing=missing)


def placement_keys(path: Path, meta: dict) -> tuple[float, np.ndarray]:
    """instant-ngp's (scale, offset (3,)) from `scale`, `offset` and `aabb`, with its defaults."""
    scale = float(number(meta, "scale", str(path), "positive", NERF_SCALE))
    offset = meta.get("offset", list(NERF_OFFSET))
    if isinstance(offset, (int, float)) and not isinstance(offset, bool):
        offset = [offset] * 3  # instant-ngp also takes one number for every axis
    if not _finite_vector(offset, 3):
        raise DataError(f"{path}: 'offset' must be a number or a list of 3 numbers, got {offset!r}")
    offset = np.asarray(offset, dtype=np.float64)
    if "aabb" in meta:
        box = meta["aabb"]
        if not (isinstance(box, list) and len(box) == 2 and all(_finite_vector(c, 3) for c in box)):
            raise DataError(f"{path}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], got {box!r}")
        lo, hi = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
        scale = 1.0 / max(1e-6, float(np.abs(hi - lo).max()))
        offset = 0.5 - 0.5 * (hi + lo) * scale
    if "aabb_scale" in meta:
        number(meta, "aabb_scale", str(path), "positive")
    return scale, offset


def _finite_vector(v, n: int) -> bool:
    return (isinstance(v, list) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def _focal(node: dict, where: str, size: tuple[int, int]) -> tuple[float, float] | None:
    """(fx, fy) that `node` gives, by instant-ngp's rules, or None: per axis x_fov (degrees), then fl_x,
    then camera_angle_x (radians); one axis alone sets both."""
    def axis(a: str, res: int) -> float | None:
        if (fov := number(node, f"{a}_fov", where)) is not None:
            return focal_from_fov(res, math.radians(fov))
        if (fl := number(node, f"fl_{a}", where)) is not None:
            return float(fl)
        if (angle := number(node, f"camera_angle_{a}", where)) is not None:
            return focal_from_fov(res, angle)
        return None

    fx, fy = axis("x", size[0]), axis("y", size[1])
    if fx is None and fy is None:
        return None
    return (fx if fx is not None else fy), (fy if fy is not None else fx)


def intrinsics(path: Path, meta: dict, fr: dict, where: str, size: tuple[int, int]) -> Intrinsics:
    """An instant-ngp frame's camera, in pixels of its image file (`size`: width, height)."""
    def get(key: str, kind: str = "positive", default=None):
        return number(fr, key, where, kind, number(meta, key, str(path), kind, default))

    w, h = get("w", "whole", size[0]), get("h", "whole", size[1])
    # a field of view is in pixels of the image as stated (w x h), as are fl_x and cx
    focal = _focal(fr, where, (w, h)) or _focal(meta, str(path), (w, h))
    if focal is None:
        raise DataError(f"{where}: no focal length: give fl_x (pixels), camera_angle_x (radians) or x_fov "
                        "(degrees), in the frame or at the top level")
    cx, cy = get("cx", "finite", 0.5 * w), get("cy", "finite", 0.5 * h)
    dist = [float(get(key, "finite", 0.0)) for key in ("k1", "k2", "k3", "p1", "p2")]
    if get("k4", "finite", 0.0):
        raise DataError(f"{where}: 'k4' is not 0; instant-ngp's k4 belongs to its fisheye lens, which is not "
                        "supported")
    return Intrinsics(float(focal[0]), float(focal[1]), float(cx), float(cy), int(w), int(h), *dist).resized(*size)
