"""LLFF's `poses_bounds.npy` (its imgs2poses.py writes it from a COLMAP model) plus `images/`.

Each row holds 17 numbers: a 3 x 5 matrix, row-major, whose columns are the camera's axes in
LLFF's order (down, right, backwards), its centre, and (height, width, focal length) in pixels;
then the near and far depth bounds of the scene in that view. The images in `images/`, sorted by
name, belong to the rows in order; a camera's (h, w, f) is rescaled to the image's own size
(LLFF's downsampled `images_4/` style folders keep the full-size numbers). Masks, when a `masks/`
folder exists, are matched by file-name stem. Every 8th image is a test view, as for nerfstudio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cameras import Intrinsics
from ..errors import DataError
from . import Capture, Frame, build_splits, holdout_splits, image_files, image_size, masks_by_stem


def c2w_from_llff(pose: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world from LLFF's (3, 5) [down, right, back, centre, hwf]."""
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = pose[:, 1], -pose[:, 0], pose[:, 2], pose[:, 3]
    return c2w


def read(root: Path) -> Capture:
    path = root / "poses_bounds.npy"
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError for a broken file
        raise DataError(f"{path}: unreadable ({err.__class__.__name__}); expected an N x 17 float array") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected an N x 17 array (a 3 x 5 pose [R | t | h w f] and near, far per image), "
                        f"got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: holds NaN or infinity")
    images = image_files(root / "images")
    if len(images) != len(arr):
        raise DataError(f"{root / 'images'}: {len(images)} images but {path.name} has {len(arr)} poses; LLFF "
                        "matches them by sorted file name, one image per row")
    poses, bounds = arr[:, :15].reshape(-1, 3, 5), arr[:, 15:]
    for k, pose in enumerate(poses):
        rot = pose[:, :3]
        if abs(np.linalg.det(rot) - 1) > 1e-2 or np.abs(rot.T @ rot - np.eye(3)).max() > 1e-2:
            raise DataError(f"{path}: row {k}: its first three columns are not a rotation")
        h, w, f = pose[:, 4]
        if min(h, w, f) <= 0 or not (0 < bounds[k, 0] < bounds[k, 1]):
            raise DataError(f"{path}: row {k}: expected positive h, w, f and 0 < near < far, got h w f = "
                            f"{h:g} {w:g} {f:g}, near far = {bounds[k, 0]:g} {bounds[k, 1]:g}")
    by_stem = masks_by_stem(root / "masks")

    def frame(k: int, image: Path) -> Frame:
        size = image_size(image)
        mask = by_stem.get(image.stem)
        if mask is not None and image_size(mask) != size:
            (mw, mh), (w, h) = image_size(mask), size
            raise DataError(f"{mask}: mask is {mw}x{mh} but its image {image} is {w}x{h}; a mask must have its "
                            "image's size")
        h, w, f = poses[k][:, 4]
        # LLFF's h and w are floats; the principal point is the image centre
        camera = Intrinsics(f, f, 0.5 * w, 0.5 * h, int(round(w)), int(round(h))).resized(*size)
        return Frame(image, c2w_from_llff(poses[k]), camera, mask, (float(bounds[k, 0]), float(bounds[k, 1])))

    splits, missing = build_splits(holdout_splits(list(range(len(arr)))), lambda k: images[k], frame)
    return Capture("llff", root, splits, files=[path], missing=missing)
