"""Readers of captured scenes: every layout a phone, COLMAP, nerfstudio or instant-ngp writes,
read into one `Capture`.

One module per layout (`blender`, `nerfstudio`, `instant_ngp`, `colmap`, `llff`), each with
`read(root) -> Capture`; `detect(root)` names the layout from the files present. A capture's
frames carry poses in the OpenGL convention (x right, y up, z backwards) in the capture's own
world, and each frame's own camera (`Intrinsics`, with OpenCV lens distortion) in pixels of its
image file as found on disk. Placing the world into the teacher's box is `pipeline/placement.py`'s
job; writing the canonical Blender-layout scene is the data stage's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cameras import Intrinsics
from ..errors import DataError

# data.kind values a reader exists for ("toy" is generated, "auto" detected)
KINDS = ("blender", "nerfstudio", "instant-ngp", "colmap", "llff")
SPLITS = ("train", "val", "test")
HOLDOUT_EVERY = 8  # without split lists, frames 0, 8, 16, ... are the test views (the LLFF / mip-NeRF rule)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Frame:
    """One photo and its camera.

    image: the photo's path; mask: optional foreground mask of the same size (0: background).
    c2w: (4, 4) float64 camera-to-world, OpenGL convention, in the capture's world.
    intrinsics: the camera in pixels of the image file (lens distortion included).
    bounds: optional (near, far) depths of the scene along this camera's axis, world units (LLFF).
    """

    image: Path
    c2w: np.ndarray
    intrinsics: Intrinsics
    mask: Path | None = None
    bounds: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass
class Capture:
    """A captured scene as read: frames per split, and what else the layout says about the scene.

    splits: "train", "test" and optionally "val" -> frames.
    files: the layout's own files (poses, calibration), for the data stage's input hash.
    points: optional (M, 3) float64 sparse points in the capture's world (COLMAP; nerfstudio's
        ply_file_path).
    source: layout-specific facts recorded with the placement (e.g. instant-ngp's scale and offset).
    missing: split -> images the layout names that are not there (their frames are left out).
    warnings: one line each, for the data stage to print.
    """

    kind: str
    root: Path
    splits: dict[str, list[Frame]]
    files: list[Path] = field(default_factory=list)
    points: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    missing: dict[str, list[Path]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> list[Frame]:
        """Every frame of every split, train first."""
        return [f for s in SPLITS for f in self.splits.get(s, [])]

    def relative(self, path: Path) -> str:
        """`path` as named from the capture folder."""
        return _rel(path, self.root)

    def input_files(self) -> list[Path]:
        """The layout's files plus every image and mask its frames use (the data stage's inputs)."""
        media = {p for f in self.frames for p in (f.image, f.mask) if p is not None}
        return sorted(set(self.files) | media)


def detect(root: Path) -> str:
    """The layout of the capture folder `root`, from the files present (one of KINDS)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"scene folder not found: {root} (set data.root to a capture folder)")
    if (root / "transforms_train.json").is_file():
        return "blender"
    if (root / "transforms.json").is_file():
        meta = read_json(root / "transforms.json")
        # instant-ngp's own keys; nerfstudio writes camera_model, instant-ngp never does
        if "camera_model" not in meta and any(k in meta for k in INSTANT_NGP_KEYS):
            return "instant-ngp"
        return "nerfstudio"
    if colmap_model_dir(root) is not None:
        return "colmap"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    raise DataError(f"{root}: no capture found; looked for transforms_train.json (blender), transforms.json "
                    "(nerfstudio, instant-ngp), sparse/0/ or sparse/ with cameras.bin|txt (colmap), "
                    "poses_bounds.npy (llff)")


# keys only instant-ngp's transforms.json has (nerfstudio's has fl_x ... and camera_model)
INSTANT_NGP_KEYS = ("aabb_scale", "camera_angle_x", "camera_angle_y", "scale", "offset", "aabb", "x_fov", "y_fov",
                    "is_fisheye")


def resolve_kind(kind: str, root: str | Path | None) -> str:
    """The layout `data.kind` stands for: 'auto' detects it in `root` (the toy scene without a root)."""
    if kind != "auto":
        return kind
    return "toy" if root is None else detect(Path(root))


# layouts whose scenes sit in the teacher's box already: not placed again
PLACED_ALREADY = ("toy", "blender")


def input_hash(capture: Capture) -> str:
    """sha256 over the names (relative to the capture folder) and contents of every input file."""
    h = hashlib.sha256()
    for p in capture.input_files():
        h.update(_rel(p, capture.root).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def colmap_model_dir(root: Path) -> Path | None:
    """sparse/0/ or sparse/ if it holds a COLMAP model (cameras.bin or cameras.txt)."""
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def read_capture(root: Path, kind: str = "auto") -> Capture:
    """Read the capture in `root` with the reader of `kind` ("auto": `detect`). Frames whose image
    is missing are left out with a warning; a split left with no frame is an error."""
    root = Path(root)
    if kind == "auto":
        kind = detect(root)
    elif not root.is_dir():
        raise DataError(f"scene folder not found: {root} (set data.root to a capture folder)")
    capture = READERS[kind](root)
    report_missing(capture)
    for split in ("train", "test"):
        if not capture.splits.get(split):
            n = len(capture.frames)
            raise DataError(f"{root}: no {split} views (the capture has {n} frame(s); without split lists every "
                            f"{HOLDOUT_EVERY}th, from the first, is a test view and the rest train)")
    return capture


# ---------------------------------------------------------------------------
# shared by the readers


def read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with 'frames'")
    return meta


def holdout_splits(entries: list) -> dict[str, list]:
    """Every HOLDOUT_EVERY-th entry (index 0, 8, 16, ...) for test, the rest for training."""
    return {"train": [e for k, e in enumerate(entries) if k % HOLDOUT_EVERY],
            "test": [e for k, e in enumerate(entries) if k % HOLDOUT_EVERY == 0]}


def natural_key(text: str) -> list:
    """Sort key that orders 'img2' before 'img10' (instant-ngp sorts its frames so)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def image_files(folder: Path) -> list[Path]:
    """The images (png, jpg, jpeg in any case) directly in `folder`, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def masks_by_stem(folder: Path) -> dict[str, Path]:
    """Mask files in `folder` by file-name stem (a photo IMG_1.jpg's mask is IMG_1.png, say)."""
    return {p.stem: p for p in image_files(folder)}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header (no decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError(f"{path}: unreadable or corrupt image ({err.__class__.__name__})") from None


def build_splits(by_split: dict[str, list], image_of, frame_of) -> tuple[dict[str, list[Frame]], dict[str, list[Path]]]:
    """Frames per split from a layout's entries, leaving out those whose image is missing.

    by_split: split -> the layout's entries (a JSON frame, a COLMAP image, ...), in order.
    image_of(entry) -> the image path; frame_of(entry, image) -> Frame (only for images that exist,
    so a reader may read an image's header to size its camera).
    Returns (splits, missing) as `Capture` holds them.
    """
    splits: dict[str, list[Frame]] = {}
    missing: dict[str, list[Path]] = {}
    for split, entries in by_split.items():
        splits[split], missing[split] = [], []
        for entry in entries:
            image = image_of(entry)
            if image.is_file():
                splits[split].append(frame_of(entry, image))
            else:
                missing[split].append(image)
    return splits, missing


def number(node: dict, key: str, where: str, kind: str = "positive", default=None):
    """node[key] checked: 'positive', 'finite' or 'whole' (a positive integer); `default` if absent."""
    value = node.get(key)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
    if kind == "positive":
        ok = ok and value > 0
    elif kind == "whole":  # 1920 or 1920.0: some writers give image sizes as floats
        ok = ok and value > 0 and float(value).is_integer()
        value = int(value) if ok else value
    if not ok:
        what = {"positive": "a positive number", "finite": "a finite number", "whole": "a positive integer"}[kind]
        raise DataError(f"{where}: '{key}' must be {what}, got {value!r}")
    return value


def report_missing(capture: Capture, shown: int = 3) -> None:
    """One warning for the frames the reader skipped because their image is missing
    (`capture.missing`); a split left with no frame is an error."""
    missing = [p for s in SPLITS for p in capture.missing.get(s, [])]
    if not missing:
        return
    for split, lost in capture.missing.items():
        if lost and not capture.splits.get(split):
            raise DataError(f"{capture.root}: no {split} views left: the images of all {len(lost)} {split} "
                            f"frames are missing (first: {_rel(lost[0], capture.root)})")
    names = ", ".join(_rel(p, capture.root) for p in missing[:shown])
    more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
    capture.warnings.append(f"warning: skipped {len(missing)} frame(s) whose image is missing: {names}{more}")


def _rel(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)


# the readers, imported here (not by name) so that the data stage's key covers their code
from . import blender, colmap, instant_ngp, llff, nerfstudio  # noqa: E402

READERS = {"blender": blender.read, "nerfstudio": nerfstudio.read, "instant-ngp": instant_ngp.read,
           "colmap": colmap.read, "llff": llff.read}
