"""One loader for Blender-layout scenes (`transforms_{split}.json` + RGBA PNGs).

Everything a user can get wrong in a scene folder is checked here and
reported as one line naming the file and what was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import Intrinsics, focal_from_fov, undistort_image
from .errors import DataError
from .progress import progress

SPLITS = ("train", "val", "test")


@dataclass
class Views:
    """Images and cameras of one split.

    images: (N, H, W, 4) float32 RGBA in [0, 1] (alpha 1 where the PNG has none).
    c2w: (N, 4, 4) float32 camera-to-world, OpenGL convention.
    intrinsics: each view's own camera (one image size per split; focal lengths and
        principal points may differ from view to view).
    """

    images: Tensor
    c2w: Tensor
    intrinsics: list[Intrinsics]
    height: int
    width: int
    names: list[str]

    @property
    def k(self) -> Tensor:
        """(N, 9) float32 (fx, fy, cx, cy, k1, k2, k3, p1, p2) per view, for batched ray generation."""
        return torch.tensor([[c.fx, c.fy, c.cx, c.cy, *c.distortion] for c in self.intrinsics], dtype=torch.float32)

    def rgb_on(self, background: Tensor) -> Tensor:
        """(N, H, W, 3) colours composited on `background` (3,)."""
        a = self.images[..., 3:]
        return self.images[..., :3] * a + background * (1 - a)


def read_transforms(root: Path, split: str) -> dict:
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        raise DataError(f"{path}: missing (a Blender scene needs transforms_train.json and transforms_test.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with 'camera_angle_x' and 'frames'")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: 'frames' must be a non-empty list")
    angle = meta.get("camera_angle_x")
    # focal lengths in pixels (`fl_x`, top level or in every frame) replace Blender's field of view
    has_fl_x = "fl_x" in meta or all(isinstance(fr, dict) and "fl_x" in fr for fr in frames)
    if not (angle is None and has_fl_x) and (not _number(angle) or not 0 < angle < math.pi):
        raise DataError(f"{path}: 'camera_angle_x' must be a number in (0, pi) radians (or give each frame's "
                        f"focal length in pixels as 'fl_x'), got {angle!r}")
    for k, fr in enumerate(frames):
        check_frame(path, k, fr)
        for key in INTRINSIC_KEYS:
            for where, node in ((f"frames[{k}].{key}", fr), (key, meta)):
                value = node.get(key)
                whole = key not in ("w", "h") or (isinstance(value, int) and not isinstance(value, bool))
                if value is not None and (not _number(value) or (key not in ("cx", "cy") and value <= 0) or not whole):
                    kind = "finite" if key in ("cx", "cy") else "positive whole" if key in ("w", "h") else "positive"
                    raise DataError(f"{path}: '{where}' must be a {kind} number of pixels, got {value!r}")
        for where, node in ((f"frames[{k}].", fr), ("", meta)):
            model = node.get("camera_model")
            if model is not None and model not in CAMERA_MODELS:
                raise DataError(f"{path}: '{where}camera_model' is {model!r}, which is not supported; expected one of "
                                f"{', '.join(CAMERA_MODELS)} (a perspective lens with k1 k2 k3 p1 p2 distortion)")
            for key in (*DISTORTION_KEYS, "k4"):
                value = node.get(key)
                if value is not None and not _number(value):
                    raise DataError(f"{path}: '{where}{key}' must be a finite number, got {value!r}")
            if node.get("k4"):
                raise DataError(f"{path}: '{where}k4' is not 0; OpenCV's radial-tangential lens (k1 k2 k3 p1 p2) "
                                "has no k4 term (fisheye lenses are not supported)")
    return meta


# camera_model values a transforms file may name (COLMAP's and nerfstudio's names of perspective
# lenses); the distortion of each is in the keys k1 k2 k3 p1 p2 (absent: 0)
CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")


# per-frame camera keys (nerfstudio's names), each also allowed once at the top level for every frame
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def frame_intrinsics(meta: dict, frame: dict, width: int, height: int) -> Intrinsics:
    """The camera of one frame of a transforms file, whose image file is width x height pixels.

    A frame's own `fl_x`, `fl_y`, `cx`, `cy` win over the file's top-level ones;
    without `fl_x`, Blender's `camera_angle_x` gives fx; fy defaults to fx (square
    pixels) and the principal point to the image centre. Values are in pixels of
    a `w` x `h` image (default: the image file's size) and are rescaled to the
    image file's size if those differ. The lens distortion `k1 k2 k3 p1 p2` (a
    frame's own or the file's; absent: 0) acts on normalised coordinates and is
    kept as is.
    """
    def get(key: str):
        return frame.get(key, meta.get(key))

    w, h = get("w") or width, get("h") or height
    fx = get("fl_x") if get("fl_x") is not None else focal_from_fov(w, float(meta["camera_angle_x"]))
    fy = get("fl_y") if get("fl_y") is not None else fx
    cx = get("cx") if get("cx") is not None else 0.5 * w
    cy = get("cy") if get("cy") is not None else 0.5 * h
    dist = [float(get(key) or 0.0) for key in DISTORTION_KEYS]
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(w), int(h), *dist).resized(width, height)


def check_frame(path: Path, k: int, fr: object) -> None:
    """Frame k of a transforms file `path` names its image and holds a camera-to-world pose
    (DataError of one line otherwise)."""
    if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
        raise DataError(f"{path}: frames[{k}] needs a string 'file_path'")
    problem = matrix_problem(fr.get("transform_matrix"))
    if problem:
        raise DataError(f"{path}: frames[{k}].transform_matrix must be a 4x4 matrix of finite numbers, {problem}")


def matrix_problem(m: object) -> str:
    """'' if `m` is a 4x4 nested list of finite numbers whose top-left 3x3 is a rotation, else what is
    wrong with it."""
    if m is None:
        return "but it is missing"
    try:
        arr = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        return "got a ragged or non-numeric value"
    if arr.shape != (4, 4):
        return f"got shape {arr.shape}"
    if not np.isfinite(arr).all():
        return "got NaN or infinity"
    rot = arr[:3, :3]
    det, drift = np.linalg.det(rot), np.abs(rot.T @ rot - np.eye(3)).max()
    if abs(det - 1.0) > ROTATION_TOLERANCE or drift > ROTATION_TOLERANCE:
        # a scaled, sheared or reflected camera would make every ray of the frame wrong
        return (f"but its top-left 3x3 is not a rotation (determinant {det:.3g}; expected orthonormal columns, "
                "determinant 1)")
    return ""


ROTATION_TOLERANCE = 1e-2  # of R^T R - I and det R - 1: poses written as float32 text pass easily


def image_path(root: Path, file_path: str) -> Path:
    p = root / file_path
    return p if p.suffix else p.with_suffix(".png")


def scene_files(root: Path) -> list[Path]:
    """Every file a scene consists of (transforms + referenced images), validated to exist."""
    if not root.is_dir():
        raise DataError(f"scene folder not found: {root} (set data.root to a folder with transforms_*.json)")
    files = []
    for split in SPLITS:
        if split == "val" and not (root / "transforms_val.json").exists():
            continue  # val is optional
        meta = read_transforms(root, split)
        files.append(root / f"transforms_{split}.json")
        for k, fr in enumerate(meta["frames"]):
            p = image_path(root, fr["file_path"])
            if not p.is_file():
                raise DataError(f"{root / f'transforms_{split}.json'}: frames[{k}] image not found: {p}")
            files.append(p)
    return files


def read_image(path: Path, require_alpha: bool = False) -> np.ndarray:
    try:
        img = iio.imread(path)
    except Exception as err:  # imageio raises many types for corrupt files
        reason = str(err).splitlines()[0][:80] if str(err) else ""
        raise DataError(f"{path}: unreadable or corrupt image ({err.__class__.__name__}: {reason}); "
                        "re-export it as PNG") from None
    if img.ndim == 2:
        img = img[..., None].repeat(3, -1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise DataError(f"{path}: expected an RGB or RGBA image, got shape {img.shape}")
    if require_alpha and img.shape[-1] != 4:
        raise DataError(f"{path}: no alpha channel (RGB image) but data.require_alpha is true; "
                        "export RGBA PNGs or set data.require_alpha: false (RGB loads as fully opaque)")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    img = img.astype(np.float32) / scale
    if img.shape[-1] == 3:
        img = np.concatenate([img, np.ones_like(img[..., :1])], -1)
    return img


def _downscale(img: np.ndarray, factor: int, path: Path) -> np.ndarray:
    if factor == 1:
        return img
    h, w = img.shape[:2]
    if h % factor or w % factor:
        raise DataError(f"{path}: size {w}x{h} is not divisible by data.downscale={factor}")
    return img.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def load_split(root: Path, split: str, downscale: int = 1, max_views: int | None = None,
               require_alpha: bool = False) -> Views:
    """Load one split; raise DataError with the offending file on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"scene folder not found: {root}")
    meta = read_transforms(root, split)
    frames = meta["frames"][:max_views] if max_views else meta["frames"]
    images, poses, names, cameras = [], [], [], []
    size = None
    for fr in frames:
        p = image_path(root, fr["file_path"])
        if not p.is_file():
            raise DataError(f"{root / f'transforms_{split}.json'}: image not found: {p}")
        img = read_image(p, require_alpha)
        if size is None:
            size = img.shape[:2]
        elif img.shape[:2] != size:
            raise DataError(f"{p}: size {img.shape[1]}x{img.shape[0]} differs from the split's "
                            f"{size[1]}x{size[0]}; all images of a scene must have one size")
        images.append(_downscale(img, downscale, p))
        poses.append(np.asarray(fr["transform_matrix"], dtype=np.float32))
        names.append(p.stem)
        camera = frame_intrinsics(meta, fr, img.shape[1], img.shape[0])
        cameras.append(camera.resized(images[-1].shape[1], images[-1].shape[0]))
    h, w = images[0].shape[:2]
    return Views(
        images=torch.from_numpy(np.stack(images)).float(),
        c2w=torch.from_numpy(np.stack(poses)),
        intrinsics=cameras,
        height=h,
        width=w,
        names=names,
    )


def resample_to(image: Tensor, src: Intrinsics, dst: Intrinsics) -> tuple[Tensor, Tensor]:
    """A pinhole photo (H, W, C) of camera `src` as pinhole camera `dst` at the same pose sees it:
    (h, w, C) and which of its pixels the photo covers, (h, w) bool.

    Both are pinhole cameras at one pose, so a pixel maps to a pixel by a scale and a shift:
    x_src = (x_dst - dst.cx) * src.fx / dst.fx + src.cx (the same in y). Where that is a whole
    factor k with aligned pixels (a photo k times the frame's size, the usual case), each pixel is
    the mean of its k x k block (area resampling); otherwise the photo is first averaged over the
    largest whole factor below the scale (no aliasing) and then sampled bilinearly. Pixels whose
    centre falls outside the photo repeat its edge and are not covered.
    """
    if src.pinhole() == dst.pinhole():
        return image, torch.ones(image.shape[:2], dtype=torch.bool)
    sx, sy = src.fx / dst.fx, src.fy / dst.fy
    ox, oy = src.cx - sx * dst.cx, src.cy - sy * dst.cy  # x_src = sx * x_dst + ox
    k = round(sx)
    x = image.permute(2, 0, 1)[None].float()
    if k >= 1 and abs(sx - k) < 1e-9 and abs(sy - k) < 1e-9 and min(ox, oy) >= 0 and \
            abs(ox - round(ox)) < 1e-6 and abs(oy - round(oy)) < 1e-6 and \
            round(ox) + k * dst.width <= src.width and round(oy) + k * dst.height <= src.height:
        x0, y0 = round(ox), round(oy)
        crop = x[..., y0:y0 + k * dst.height, x0:x0 + k * dst.width]
        out = F.interpolate(crop, size=(dst.height, dst.width), mode="area") if k > 1 else crop
        return out[0].permute(1, 2, 0).to(image.dtype), torch.ones(dst.height, dst.width, dtype=torch.bool)
    p = max(1, int(min(sx, sy)))  # the whole factor averaged first
    pooled = F.avg_pool2d(x, p) if p > 1 else x
    u = (torch.arange(dst.width, dtype=torch.float64) + 0.5) * sx + ox  # source pixel coordinates
    v = (torch.arange(dst.height, dtype=torch.float64) + 0.5) * sy + oy
    covered = ((v >= 0) & (v <= src.height))[:, None] & ((u >= 0) & (u <= src.width))[None, :]
    gx = u / p * (2 / pooled.shape[-1]) - 1  # grid_sample's [-1, 1] over the pooled image's edges
    gy = v / p * (2 / pooled.shape[-2]) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float()[None]
    out = F.grid_sample(pooled, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).to(image.dtype), covered


def photos_at(root: Path, split: str, downscale: int, background: str,
              camera: Intrinsics) -> tuple[Views, Tensor, Tensor]:
    """A split's photos as the pinhole `camera` (the student's frame) sees them from each photo's
    pose: composited on `background` ('white' | 'black'), undistorted to the photo's own pinhole
    camera (`undistort_image`, the project's rule for every comparison with a photo) and resampled
    (`resample_to`), never squashed. Returns the views, rgb (N, H, W, 3) float in [0, 1] and the
    pixels each photo covers (N, H, W) bool (all, when the photos' cameras are the frame's scaled)."""
    views = load_split(root, split, downscale)
    rgb = views.rgb_on(background_rgb(background))
    out, covered = [], []
    for k, intrinsics in enumerate(views.intrinsics):
        photo, pinhole = undistort_image(rgb[k], intrinsics)
        img, cov = resample_to(photo, pinhole, camera)
        out.append(img)
        covered.append(cov)
    return views, torch.stack(out), torch.stack(covered)


def load_rendered_views(transforms: Path) -> tuple[Tensor, Tensor, list[Intrinsics]]:
    """Views a stage rendered (Blender layout: `transforms` JSON + 8-bit PNGs beside it):
    images (N, H, W, 3) uint8, poses (N, 4, 4) float32, each view's intrinsics."""
    transforms = Path(transforms)
    redo = "re-run `python -m pipeline stage distill --force`"
    try:
        meta = json.loads(transforms.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{transforms}: missing or unreadable ({err.__class__.__name__}); {redo}") from None
    imgs, poses, cameras = [], [], []
    for fr in progress(meta["frames"], desc=f"load {transforms.name}", unit="view", leave=False):
        path = image_path(transforms.parent, fr["file_path"])
        try:
            imgs.append(iio.imread(path)[..., :3])
        except Exception as err:
            raise DataError(f"{path}: unreadable view ({err.__class__.__name__}); {redo}") from None
        poses.append(fr["transform_matrix"])
        cameras.append(frame_intrinsics(meta, fr, imgs[-1].shape[1], imgs[-1].shape[0]))
    return torch.from_numpy(np.stack(imgs)), torch.tensor(poses, dtype=torch.float32), cameras


def background_rgb(name: str) -> Tensor:
    return torch.ones(3) if name == "white" else torch.zeros(3)
