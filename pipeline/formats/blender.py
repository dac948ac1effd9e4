"""NeRF-synthetic's Blender layout: `transforms_{train,val,test}.json` (val optional) beside the images.

The layout the rest of the pipeline reads (pipeline/scene.py validates it; this reader shares
that code). Its poses are OpenGL camera-to-world already, and a Blender scene is placed already:
the data stage reads one in place unless its images need resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..scene import frame_intrinsics, image_path, read_transforms
from . import Capture, Frame, build_splits, image_size


def read(root: Path) -> Capture:
    by_split, metas = {}, {}
    for split in ("train", "val", "test"):
        if split == "val" and not (root / "transforms_val.json").exists():
            continue  # val is optional
        metas[split] = read_transforms(root, split)
        by_split[split] = [(split, fr) for fr in metas[split]["frames"]]

    def frame(entry, image: Path) -> Frame:
        split, fr = entry
        camera = frame_intrinsics(metas[split], fr, *image_size(image))
        return Frame(image, np.asarray(fr["transform_matrix"], dtype=np.float64), camera)

    splits, missing = build_splits(by_split, lambda e: image_path(root, e[1]["file_path"]), frame)
    files = [root / f"transforms_{s}.json" for s in metas]
    return Capture("blender", root, splits, files=files, missing=missing)
