"""A COLMAP reconstruction: `sparse/0/` (or `sparse/`) with cameras, images and points3D, binary
or text, read with pycolmap, plus the photos in `images/`.

COLMAP stores world-to-camera poses in OpenCV's camera convention (x right, y down, z forward);
we invert them and flip the camera's y and z axes into OpenGL's. Its pixel coordinates put the
top-left pixel's centre at (0.5, 0.5), as ours do, so principal points carry over unchanged.
Registered images (those with a pose) become frames, in order of image name; every 8th is a
test view. A foreground mask is `masks/<image name>.png` (COLMAP's own mask convention) or a file
in `masks/` with the image's stem. The sparse points bound the scene (pipeline/placement.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cameras import Intrinsics
from ..errors import DataError
from . import Capture, Frame, build_splits, colmap_model_dir, holdout_splits, image_size, masks_by_stem

# COLMAP camera models (src/colmap/sensor/models.h) -> their parameters, in order
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips a camera's y and z axes: OpenCV <-> OpenGL


def camera_intrinsics(model: str, params, width: int, height: int, where: str) -> Intrinsics:
    """The Intrinsics of a COLMAP camera (`model` name, its `params` in COLMAP's order)."""
    if model not in CAMERA_MODELS:
        raise DataError(f"{where}: camera model {model} is not supported; expected one of "
                        f"{', '.join(CAMERA_MODELS)} (undistort the images with COLMAP's image_undistorter "
                        "for other lenses)")
    names = CAMERA_MODELS[model]
    if len(params) != len(names):
        raise DataError(f"{where}: a {model} camera has {len(names)} parameters ({' '.join(names)}), "
                        f"got {len(params)}")
    p = dict(zip(names, map(float, params), strict=True))
    fx = p.get("fx", p.get("f"))
    fy = p.get("fy", p.get("f"))
    return Intrinsics(fx, fy, p["cx"], p["cy"], int(width), int(height), k1=p.get("k1", 0.0), k2=p.get("k2", 0.0),
                      p1=p.get("p1", 0.0), p2=p.get("p2", 0.0))


def c2w_from_cam_from_world(cam_from_world: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world from COLMAP's (3, 4) world-to-camera [R | t] (OpenCV camera)."""
    w2c = np.eye(4)
    w2c[:3] = cam_from_world
    return np.linalg.inv(w2c) @ GL_FROM_CV


def read(root: Path) -> Capture:
    model_dir = colmap_model_dir(root)
    if model_dir is None:
        raise DataError(f"{root}: no COLMAP model: expected sparse/0/ or sparse/ with cameras.bin or cameras.txt")
    try:
        import pycolmap
    except ImportError:
        raise DataError("reading a COLMAP model needs pycolmap: pip install pycolmap") from None
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as err:  # pycolmap raises plain RuntimeErrors (or ValueErrors) with COLMAP's message
        reason = (str(err).strip().splitlines() or [err.__class__.__name__])[-1][:160]
        raise DataError(f"{model_dir}: cannot read the COLMAP model ({reason})") from None
    registered = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not registered:
        raise DataError(f"{model_dir}: the COLMAP model has no registered images (none has a pose); run COLMAP's "
                        "mapper until it registers the photos")
    cameras = {}
    for im in registered:
        cam = rec.cameras[im.camera_id]
        where = f"{model_dir}: camera {im.camera_id} (image {im.name})"
        cameras[im.camera_id] = camera_intrinsics(cam.model.name, cam.params, cam.width, cam.height, where)

    images, masks = root / "images", root / "masks"
    by_stem = masks_by_stem(masks)

    def frame(im, image: Path) -> Frame:
        size = image_size(image)
        mask = masks / f"{im.name}.png"
        mask = mask if mask.is_file() else by_stem.get(Path(im.name).stem)
        if mask is not None and image_size(mask) != size:
            (mw, mh), (w, h) = image_size(mask), size
            raise DataError(f"{mask}: mask is {mw}x{mh} but its image {image} is {w}x{h}; a mask must have its "
                            "image's size")
        c2w = c2w_from_cam_from_world(np.asarray(im.cam_from_world().matrix(), dtype=np.float64))
        return Frame(image, c2w, cameras[im.camera_id].resized(*size), mask)

    splits, missing = build_splits(holdout_splits(registered), lambda im: images / im.name, frame)
    points = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".bin", ".txt"))
    return Capture("colmap", root, splits, files=files, points=points if len(points) else None,
                   source={"model": str(model_dir.relative_to(root)), "points": len(points)}, missing=missing)
