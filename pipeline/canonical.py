"""A captured scene written in the one layout the stages read: Blender's transforms files + RGBA PNGs.

The data stage turns every capture (pipeline/formats/) into `transforms_{split}.json` with each
frame's own camera (`Intrinsics.to_json`: focal lengths, principal point, size, lens distortion)
and its pose in the teacher's world (pipeline/placement.py), beside RGBA PNGs whose alpha is the
frame's mask (255 without one), resized so that the long side is at most `max_size` pixels.

Decoding a phone's 12-megapixel JPG costs far more than the rest, so each resized image is kept
in a cache folder under a key of the source files' contents and the target size; a re-run finds
it there (or in the previous run's folder) instead of decoding again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from .errors import DataError
from .formats import Capture, Frame, image_size
from .io import atomic_write_bytes, atomic_write_text
from .placement import Placement
from .progress import progress
from .scene import read_image

CACHE_VERSION = b"rgba-area-v3"  # part of every cache key: change it when the conversion changes


def target_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(width, height) with the long side at most `max_size`, the aspect ratio kept (rounded)."""
    s = min(1.0, max_size / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _decoded(path: Path, size: tuple[int, int]) -> tuple[np.ndarray | None, tuple[int, int]]:
    """A JPEG decoded at the smallest of its 1/1, 1/2, 1/4, 1/8 scales that still covers `size`
    (uint8 (h, w, 3) or (h, w)), and its full (width, height). A 12-megapixel photo then decodes
    several times faster and is resampled from up to 64x fewer pixels; the DCT's own downscale is
    an area filter too. Another format: None (decoded in full by the caller)."""
    try:
        with Image.open(path) as im:
            full = im.size
            if im.format != "JPEG":
                return None, full
            im.draft("L" if im.mode == "L" else "RGB", size)
            return np.asarray(im.convert("L" if im.mode == "L" else "RGB")), full
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError(f"{path}: unreadable or corrupt image ({err.__class__.__name__}); re-export it") from None


def _area_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 -> (size[1], size[0], C), PIL's area filter per channel."""
    if (img.shape[1], img.shape[0]) == size:
        return img
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c])).resize(size, Image.BOX))
                     for c in range(img.shape[-1])], -1)


def rgba_png(frame: Frame, size: tuple[int, int]) -> bytes:
    """The frame's photo as an 8-bit RGBA PNG of `size` (width, height): alpha from the photo's own
    alpha times the mask's first channel, area-resampled on premultiplied colour (no dark fringes)."""
    rgb, full = _decoded(frame.image, size)
    if rgb is not None and rgb.ndim == 2:
        rgb = rgb[..., None].repeat(3, -1)
    if frame.mask is None and rgb is not None:  # a plain JPEG (most captures): area filter on 8 bits
        im = Image.fromarray(rgb)
        rgb = np.asarray(im.resize(size, Image.BOX) if im.size != size else im)
        rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1)
        return iio.imwrite("<bytes>", rgba, extension=".png")
    if rgb is not None:
        img = np.concatenate([rgb.astype(np.float32) / 255.0, np.ones((*rgb.shape[:2], 1), np.float32)], -1)
    else:
        img = read_image(frame.image)  # (H, W, 4) float32 in [0, 1]
    if frame.mask is not None:
        mask, mask_full = _decoded(frame.mask, size)
        if mask is None:
            mask = iio.imread(frame.mask)
        if mask_full != full:
            raise DataError(f"{frame.mask}: mask is {mask_full[0]}x{mask_full[1]} but its image {frame.image} is "
                            f"{full[0]}x{full[1]}; a mask must have its image's size")
        scale = 65535.0 if mask.dtype == np.uint16 else 1.0 if mask.dtype == bool else 255.0
        alpha = (mask[..., 0] if mask.ndim == 3 else mask).astype(np.float32) / scale
        # the photo and its mask may have been decoded at different scales (a JPEG photo, a PNG mask)
        alpha = _area_resize(alpha[..., None], (img.shape[1], img.shape[0]))[..., 0]
        img[..., 3] *= alpha
    if (img.shape[1], img.shape[0]) != size:
        img[..., :3] *= img[..., 3:]
        img = _area_resize(img, size)
        a = img[..., 3:]
        img[..., :3] = np.where(a > 1e-6, img[..., :3] / np.maximum(a, 1e-6), 0.0)
    return iio.imwrite("<bytes>", np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), extension=".png")


def cached_png(frame: Frame, size: tuple[int, int], cache: Path, earlier: list[Path]) -> tuple[Path, bool]:
    """The cache file of the frame's converted image, made (or taken from an `earlier` cache folder)
    if missing, and whether it was there already. The key covers the photo's and the mask's
    contents and the size."""
    h = hashlib.sha256(CACHE_VERSION)
    for part in (file_sha256(frame.image), file_sha256(frame.mask) if frame.mask else "", f"{size[0]}x{size[1]}"):
        h.update(part.encode() + b"\0")
    path = cache / f"{h.hexdigest()}.png"
    if path.is_file():
        return path, True
    for folder in earlier:
        if (folder / path.name).is_file():
            _link_or_copy(folder / path.name, path)
            return path, True
    atomic_write_bytes(path, rgba_png(frame, size))
    return path, False


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # the same bytes, no second copy on disk
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_scene(capture: Capture, placement: Placement, root: Path, max_size: int, cache: Path,
                earlier_caches: list[Path] = (), log: Callable[[str], None] = print) -> dict[str, int]:
    """Write `capture`, placed by `placement`, into `root` in the Blender layout; return the
    number of frames per split. Converted images are kept in `cache` (see the module docstring)."""
    counts, reused = {}, 0
    for split, frames in capture.splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        entries, taken = [], set()
        for frame in progress(frames, desc=f"convert {split}", unit="image", leave=False):
            size = target_size(*image_size(frame.image), max_size)
            png, found = cached_png(frame, size, cache, list(earlier_caches))
            reused += found
            name = _unique(frame.name, taken)
            _link_or_copy(png, root / split / f"{name}.png")
            camera = frame.intrinsics.resized(*size)
            entries.append({"file_path": f"{split}/{name}.png",
                            "transform_matrix": placement.apply_c2w(frame.c2w).tolist(), **camera.to_json()})
        atomic_write_text(root / f"transforms_{split}.json", json.dumps({"frames": entries}, indent=1))
        counts[split] = len(entries)
    log(f"wrote {sum(counts.values())} images to {root} (long side <= {max_size} px; {reused} from the cache)")
    return counts


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... if taken (photos of one name in different folders)."""
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    taken.add(out)
    return out
