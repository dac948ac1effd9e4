"""nerfstudio's data format: one `transforms.json` beside the images (docs.nerf.studio, "Data
conventions").

Poses (`transform_matrix`) are camera-to-world in the OpenGL convention already. Intrinsics
(`fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`) and lens distortion (`k1`, `k2`, `k3`, `p1`, `p2`) are
given once at the top level or per frame (a frame's own win); `camera_model` names the lens
(PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL and OPENCV are perspective lenses whose
distortion these keys hold; fisheye and panoramic models are refused). `mask_path` per frame
names a foreground mask. Frames are ordered by file name, as nerfstudio orders them; the splits
come from `train_filenames` / `val_filenames` / `test_filenames` or, without them, every 8th
frame is a test view. `ply_file_path` (ns-process-data's sparse points from COLMAP, in the
poses' world) bounds the scene, as a COLMAP model's points do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..cameras import Intrinsics
from ..errors import DataError
from ..scene import CAMERA_MODELS, DISTORTION_KEYS, check_frame
from . import IMAGE_SUFFIXES, Capture, Frame, build_splits, holdout_splits, image_size, number, read_json


def read(root: Path) -> Capture:
    path = root / "transforms.json"
    meta = read_json(path)
    entries = frame_entries(path, meta, sort_key=lambda fr: normalised(fr["file_path"]))
    check_camera_model(path, meta)
    by_split = split_entries(path, meta, entries)
    splits, missing = build_splits(by_split, lambda e: resolve(root, e[1]["file_path"]),
                                   lambda e, image: make_frame(path, meta, e, image, intrinsics))
    files, points = [path], None
    if isinstance(meta.get("ply_file_path"), str):  # ns-process-data's sparse points, in the poses' world
        ply = resolve(root, meta["ply_file_path"])
        if not ply.is_file():
            raise DataError(f"{path}: 'ply_file_path' names {ply}, which is not there")
        files, points = [path, ply], read_ply_points(ply)
    return Capture("nerfstudio", root, splits, files=files, points=points, missing=missing)


def frame_entries(path: Path, meta: dict, sort_key) -> list[tuple[int, dict]]:
    """(index in the file, frame) of every frame, validated and sorted by `sort_key(frame)`."""
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: 'frames' must be a non-empty list")
    for k, fr in enumerate(frames):
        check_frame(path, k, fr)
        if "mask_path" in fr and not isinstance(fr["mask_path"], str):
            raise DataError(f"{path}: frames[{k}].mask_path must be a string, got {fr['mask_path']!r}")
    return sorted(enumerate(frames), key=lambda e: sort_key(e[1]))


def check_camera_model(path: Path, meta: dict) -> None:
    """Refuse, in one line, a lens these readers cannot model (top level or in any frame)."""
    for where, node in [("camera_model", meta)] + [(f"frames[{k}].camera_model", fr)
                                                  for k, fr in enumerate(meta["frames"])]:
        model = node.get("camera_model")
        if model is not None and model not in CAMERA_MODELS:
            raise DataError(f"{path}: '{where}' is {model!r}, which is not supported; expected one of "
                            f"{', '.join(CAMERA_MODELS)} (perspective lenses with k1 k2 k3 p1 p2 distortion)")


def normalised(file_path: str) -> str:
    return os.path.normpath(file_path.replace("\\", "/"))


def resolve(root: Path, file_path: str) -> Path:
    """The file a frame names; without an extension, the first of .png, .jpg, .jpeg that exists
    (instant-ngp's rule; Blender-style paths such as ./train/r_0 have none)."""
    path = root / normalised(file_path)
    if not path.suffix and not path.exists():
        for suffix in IMAGE_SUFFIXES:
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return path


def split_entries(path: Path, meta: dict, entries: list[tuple[int, dict]]) -> dict[str, list]:
    """The entries of each split: from the file's `<split>_filenames` lists (train and test needed,
    val optional) or, without any, every 8th entry for test."""
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if all(v is None for v in lists.values()):
        return holdout_splits(entries)
    by_name = {normalised(fr["file_path"]): (k, fr) for k, fr in entries}
    out = {}
    for split, names in lists.items():
        if names is None:
            if split == "val":
                continue
            raise DataError(f"{path}: has split lists but no '{split}_filenames' (train_filenames and "
                            "test_filenames are needed; val_filenames is optional)")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: '{split}_filenames' must be a list of file paths")
        unknown = [n for n in names if normalised(n) not in by_name]
        if unknown:
            raise DataError(f"{path}: '{split}_filenames' names {unknown[0]!r}, which no frame's file_path is")
        chosen = {normalised(n) for n in names}
        out[split] = [e for e in entries if normalised(e[1]["file_path"]) in chosen]  # in the frames' order
    return out


def make_frame(path: Path, meta: dict, entry: tuple[int, dict], image: Path, intrinsics_of) -> Frame:
    k, fr = entry
    where = f"{path}: frames[{k}]"
    size = image_size(image)
    mask = None
    if fr.get("mask_path"):
        mask = resolve(path.parent, fr["mask_path"])
        if not mask.is_file():
            raise DataError(f"{where}: mask not found: {mask}")
        if image_size(mask) != size:
            (mw, mh), (w, h) = image_size(mask), size
            raise DataError(f"{mask}: mask is {mw}x{mh} but its image {image} is {w}x{h}; a mask must have its "
                            "image's size")
    camera = intrinsics_of(path, meta, fr, where, size)
    return Frame(image, np.asarray(fr["transform_matrix"], dtype=np.float64), camera, mask)


def intrinsics(path: Path, meta: dict, fr: dict, where: str, size: tuple[int, int]) -> Intrinsics:
    """A nerfstudio frame's camera, in pixels of its image file (`size`: width, height)."""
    def get(key: str, kind: str = "positive", default=None):
        return number(fr, key, where, kind, number(meta, key, str(path), kind, default))

    w, h = get("w", "whole", size[0]), get("h", "whole", size[1])
    fx = get("fl_x")
    if fx is None:
        raise DataError(f"{where}: no focal length: give 'fl_x' (pixels) in the frame or at the top level")
    fy = get("fl_y", default=fx)
    cx, cy = get("cx", "finite", 0.5 * w), get("cy", "finite", 0.5 * h)
    dist = [float(get(key, "finite", 0.0)) for key in DISTORTION_KEYS]
    if get("k4", "finite", 0.0):
        raise DataError(f"{where}: 'k4' is not 0; OpenCV's radial-tangential lens (k1 k2 k3 p1 p2) has no k4 term "
                        "(fisheye lenses are not supported)")
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(w), int(h), *dist).resized(*size)


PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
             "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
             "double": "f8", "float64": "f8"}


def read_ply_points(path: Path) -> np.ndarray:
    """(M, 3) float64 x, y, z of a point cloud's PLY file (ascii or binary little-endian; vertices first)."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1:]
    fmt = next((ln.split()[1] for ln in header if ln.startswith("format ")), "")
    elements = [ln.split() for ln in header if ln.startswith(("element ", "property "))]
    if not elements or elements[0][:2] != ["element", "vertex"]:
        raise DataError(f"{path}: expected the vertices as the first element of the PLY file")
    count, props = int(elements[0][2]), []
    for words in elements[1:]:
        if words[0] == "element":
            break
        if words[1] == "list" or words[1] not in PLY_TYPES:
            raise DataError(f"{path}: vertex property {' '.join(words[1:])!r} is not supported")
        props.append((words[2], PLY_TYPES[words[1]]))
    names = [n for n, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise DataError(f"{path}: the vertices have no x, y, z properties")
    if fmt == "ascii":
        rows = np.array(body.split(None, count * len(props))[:count * len(props)], dtype=np.float64)
        table = rows.reshape(count, len(props))
        xyz = table[:, [names.index(a) for a in "xyz"]]
    elif fmt == "binary_little_endian":
        table = np.frombuffer(body, dtype=np.dtype([(n, "<" + t) for n, t in props]), count=count)
        xyz = np.stack([table[a] for a in "xyz"], -1).astype(np.float64)
    else:
        raise DataError(f"{path}: PLY format {fmt!r} is not supported (ascii or binary_little_endian)")
    return xyz
