"""Camera math shared by every stage: rays through pinhole and distorted lenses, orbit poses,
pose sampling.

Convention (NeRF Blender scenes, OpenGL): a camera-to-world matrix `c2w`
(4, 4) has columns (x right, y up, z backwards, eye); the camera looks down
its -z axis. Pixel (i, j) (column, row) has its centre at (i + 0.5, j + 0.5).

Lens distortion follows OpenCV's radial-tangential model (COLMAP's OPENCV) on
normalised image coordinates in OpenCV's frame, x = (u - cx) / fx right and
y = (v - cy) / fy *down*; the camera-frame direction of an undistorted (x, y)
is (x, -y, -1). The teacher learns from the photos as taken (its rays go
through the lens); every comparison with a photo (the teacher's and the
student's test PSNR, the report's figures) is made against the photo
undistorted to its pinhole camera (`undistort_image`), since the renders and
the student are pinhole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Focal length in pixels of a pinhole camera with horizontal FOV `camera_angle_x` (rad)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


@dataclass(frozen=True)
class Intrinsics:
    """A camera's intrinsics, in pixels of a width x height image, with its lens distortion.

    fx, fy: focal lengths; cx, cy: principal point, measured from the image's top-left
    corner (pixel (i, j) has its centre at (i + 0.5, j + 0.5)). Blender scenes fill them
    from `camera_angle_x` (fx = fy, centred); captures with per-frame calibration
    (phones: `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`) fill each view's own.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    # lens distortion, OpenCV's radial-tangential model (COLMAP's OPENCV; nerfstudio's k1 k2 k3
    # p1 p2), on normalised image coordinates; all 0: a pinhole camera
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    @property
    def distortion(self) -> tuple[float, float, float, float, float]:
        """(k1, k2, k3, p1, p2)."""
        return (self.k1, self.k2, self.k3, self.p1, self.p2)

    @property
    def is_pinhole(self) -> bool:
        return not any(self.distortion)

    def pinhole(self) -> Intrinsics:
        """The same camera without its lens distortion."""
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    @staticmethod
    def from_fov(width: int, height: int, camera_angle_x: float) -> Intrinsics:
        """The centred, square-pixel camera of horizontal field of view `camera_angle_x` (radians)."""
        f = focal_from_fov(width, camera_angle_x)
        return Intrinsics(f, f, 0.5 * width, 0.5 * height, width, height)

    def resized(self, width: int, height: int) -> Intrinsics:
        """The same camera imaging the same field of view onto width x height pixels."""
        sx, sy = width / self.width, height / self.height  # distortion acts on normalised coordinates: kept
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height, *self.distortion)

    @property
    def camera_angle_x(self) -> float:
        """Horizontal field of view (radians) of a centred camera with this fx and width."""
        return 2 * math.atan(0.5 * self.width / self.fx)

    def to_json(self) -> dict:
        """The per-frame keys of a transforms file (nerfstudio's names; the distortion's only when
        there is some)."""
        keys = {"fl_x": self.fx, "fl_y": self.fy, "cx": self.cx, "cy": self.cy, "w": self.width, "h": self.height}
        if not self.is_pinhole:
            keys |= {"camera_model": "OPENCV", "k1": self.k1, "k2": self.k2, "k3": self.k3, "p1": self.p1,
                     "p2": self.p2}
        return keys


def student_frame(cameras: list[Intrinsics], long_side: int, multiple: int) -> Intrinsics:
    """The one pinhole camera the pseudo-views and the student use, from the training photos'
    cameras: their median focal lengths and principal point, each photo scaled so that its long
    side is `long_side` pixels (one scale for both axes: pixels keep their shape). The short side
    is rounded to a multiple of `multiple` (the student's block of pixels; `long_side` is one
    already), the rounding shared equally by both edges, so the frame shows a sliver more or less
    of the scene, never a squashed one. A Blender scene gets its own camera resized; a phone
    capture its lens without the distortion."""
    aspect = float(np.median([c.height / c.width for c in cameras]))
    if aspect <= 1:
        width, height = long_side, max(multiple, round(long_side * aspect / multiple) * multiple)
    else:
        width, height = max(multiple, round(long_side / aspect / multiple) * multiple), long_side
    rows = []
    for c in cameras:
        s = width / c.width if aspect <= 1 else height / c.height
        rows.append((c.fx * s, c.fy * s, c.cx * s + (width - c.width * s) / 2,
                     c.cy * s + (height - c.height * s) / 2))
    fx, fy, cx, cy = (float(np.median(v)) for v in zip(*rows, strict=True))
    return Intrinsics(fx, fy, cx, cy, width, height)


# Newton steps of `undistort_points`: from the distorted point as the first guess, float32 round-off
# (1e-7) in 3 steps for |k1| = 0.1 and in 4 for |k1| = 0.3 (tangential 2e-3, r <= 1); 8 leave a margin
UNDISTORT_STEPS = 8


def _distortion_terms(x: Tensor, y: Tensor, dist: Tensor) -> tuple[Tensor, ...]:
    """The forward model at (x, y) (...,) and its Jacobian: (xd, yd, dxd/dx, dxd/dy, dyd/dx, dyd/dy);
    dist (..., 5) or (5,)."""
    k1, k2, k3, p1, p2 = dist.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2 * k2 + r2 * (3 * k3))  # d radial / d r2
    xd = x * radial + (2 * p1 * x * y + p2 * (r2 + 2 * x * x))
    yd = y * radial + (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    xd_x = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
    xd_y = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
    yd_y = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
    return xd, yd, xd_x, xd_y, xd_y, yd_y  # the Jacobian is symmetric


def _as_distortion(dist, like: Tensor) -> Tensor:
    return torch.as_tensor(dist, dtype=like.dtype, device=like.device)


def distort_points(xy: Tensor, dist) -> Tensor:
    """OpenCV's forward lens model: where an ideal (pinhole) point lands in the photo.

    x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2),
    y_d = y (1 + k1 r^2 + k2 r^4 + k3 r^6) + p1 (r^2 + 2 y^2) + 2 p2 x y,  r^2 = x^2 + y^2.

    Args:
        xy: (..., 2) undistorted normalised coordinates (OpenCV frame: x right, y down).
        dist: (5,) or (..., 5), broadcastable against xy's leading dims: (k1, k2, k3, p1, p2),
            a tensor or a sequence of floats.
    Returns:
        (..., 2) distorted normalised coordinates.
    """
    xd, yd, *_ = _distortion_terms(xy[..., 0], xy[..., 1], _as_distortion(dist, xy))
    return torch.stack([xd, yd], dim=-1)


def undistort_points(xy: Tensor, dist, steps: int = UNDISTORT_STEPS) -> Tensor:
    """Inverse of `distort_points`: the ideal point that the lens images at `xy`.

    A fixed number of Newton steps on distort(p) - xy = 0 from p = xy (no data-dependent stopping:
    vectorised, and the same arithmetic on every device). With all coefficients 0 every step is
    exactly 0 (radial factor 1, identity Jacobian), so a pinhole's points come back bit for bit.

    Args:
        xy: (..., 2) distorted normalised coordinates (OpenCV frame: x right, y down).
        dist: (5,) or (..., 5) (k1, k2, k3, p1, p2), as for `distort_points`.
        steps: Newton steps.
    Returns:
        (..., 2) undistorted normalised coordinates.
    """
    dist = _as_distortion(dist, xy)
    xd, yd = xy[..., 0], xy[..., 1]
    x, y = xd, yd
    for _ in range(steps):
        px, py, j_xx, j_xy, j_yx, j_yy = _distortion_terms(x, y, dist)
        rx, ry = px - xd, py - yd
        det = j_xx * j_yy - j_xy * j_yx
        # the model folds over far outside any real lens's field (det -> 0): stand still there
        det = torch.where(det.abs() > 1e-12, det, math.inf)
        x = x - (rx * j_yy - ry * j_xy) / det
        y = y - (ry * j_xx - rx * j_yx) / det
    return torch.stack([x, y], dim=-1)


def _lens_directions(i: Tensor, j: Tensor, k: Tensor) -> Tensor:
    """Directions (z = -1) of pixel-centre coordinates i, j (...,) through cameras k (..., 9)."""
    x = (i - k[..., 2]) / k[..., 0]
    y = (j - k[..., 3]) / k[..., 1]  # OpenCV's y, down the image
    xy = undistort_points(torch.stack([x, y], dim=-1), k[..., 4:9])
    return torch.stack([xy[..., 0], -xy[..., 1], -torch.ones_like(x)], dim=-1)


def camera_directions(intrinsics: Intrinsics, device=None) -> Tensor:
    """Unnormalised ray directions in the camera frame, (height, width, 3), z = -1, each pixel's
    through the lens (`undistort_points` of its distorted normalised coordinates)."""
    k = intrinsics
    j, i = torch.meshgrid(
        torch.arange(k.height, dtype=torch.float32, device=device),
        torch.arange(k.width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    if not k.is_pinhole:
        row = torch.tensor([k.fx, k.fy, k.cx, k.cy, *k.distortion], dtype=torch.float32, device=device)
        return _lens_directions(i + 0.5, j + 0.5, row)
    # a pinhole's arithmetic, unchanged: Blender scenes' rays stay bit for bit what they were
    x = (i + 0.5 - k.cx) / k.fx
    y = -(j + 0.5 - k.cy) / k.fy
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def pixel_directions(pixel: Tensor, k: Tensor, width: int) -> Tensor:
    """Camera-frame directions (unnormalised, z = -1) of flat pixel indices, each through its
    own view's intrinsics and lens: the teacher's ray batches draw pixels from every view.

    Args:
        pixel: (N,) row-major pixel index j * width + i.
        k: (N, 9) each pixel's view's (fx, fy, cx, cy, k1, k2, k3, p1, p2) (`Views.k`), or (N, 4)
            (fx, fy, cx, cy) for pinhole views. A batch whose distortion is all 0 takes the pinhole
            arithmetic; a mixed batch undistorts every ray, which for a pinhole row is exact.
        width: image width in pixels (one size per split).
    Returns:
        (N, 3), equal to `camera_directions(...)[j, i]` of the pixel's view.
    """
    i = (pixel % width).float() + 0.5
    j = torch.div(pixel, width, rounding_mode="floor").float() + 0.5
    # one check per batch (a device sync on CUDA): callers with only pinhole views pass (N, 4)
    if k.shape[-1] > 4 and bool(k[:, 4:].any()):
        return _lens_directions(i, j, k)
    x = (i - k[:, 2]) / k[:, 0]
    y = -(j - k[:, 3]) / k[:, 1]
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def undistort_image(image: Tensor, intrinsics: Intrinsics) -> tuple[Tensor, Intrinsics]:
    """A photo resampled into its pinhole camera (same fx, fy, cx, cy and size, no distortion).

    The project's rule: the teacher and the student are compared with each test photo undistorted
    to its pinhole camera by this function, everywhere (their renders are pinhole). Each pinhole
    pixel's normalised coordinate is distorted (`distort_points`, the closed-form forward model)
    and the photo is sampled there bilinearly; where that falls outside the photo (the corners of
    a pincushion lens) the nearest edge pixel is repeated. A pinhole photo comes back as is.

    Args:
        image: (H, W, C) float, H x W the camera's height x width.
        intrinsics: the photo's camera.
    Returns:
        (H, W, C) the undistorted photo, and `intrinsics.pinhole()`.
    """
    k = intrinsics
    if image.shape[:2] != (k.height, k.width):
        raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} pixels for a {k.width}x{k.height} camera")
    if k.is_pinhole:
        return image, k
    j, i = torch.meshgrid(
        torch.arange(k.height, dtype=torch.float32, device=image.device),
        torch.arange(k.width, dtype=torch.float32, device=image.device),
        indexing="ij",
    )
    xy = torch.stack([(i + 0.5 - k.cx) / k.fx, (j + 0.5 - k.cy) / k.fy], dim=-1)
    xy = distort_points(xy, k.distortion)
    # pixel coordinates (centres at +0.5) to grid_sample's [-1, 1] over the image's outer edges
    grid = torch.stack([(xy[..., 0] * k.fx + k.cx) * (2 / k.width) - 1,
                        (xy[..., 1] * k.fy + k.cy) * (2 / k.height) - 1], dim=-1)
    out = F.grid_sample(image.permute(2, 0, 1)[None].float(), grid[None], mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).to(image.dtype), k.pinhole()


def pinhole_rays(c2w: Tensor, dirs_cam: Tensor) -> tuple[Tensor, Tensor]:
    """World-space rays for camera directions.

    Args:
        c2w: (..., 4, 4) or (..., 3, 4) camera-to-world.
        dirs_cam: (H, W, 3) camera-frame directions from `camera_directions`.
    Returns:
        rays_o: (..., H, W, 3) origins; rays_d: (..., H, W, 3) unit directions.
    """
    rot = c2w[..., :3, :3]
    d = torch.einsum("...ij,hwj->...hwi", rot, dirs_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    return o, d


def rays_for_pixels(c2w: Tensor, dirs_cam: Tensor) -> tuple[Tensor, Tensor]:
    """One ray per (camera, direction) pair.

    Args:
        c2w: (N, 4, 4) camera-to-world of each ray's camera.
        dirs_cam: (N, 3) camera-frame directions.
    Returns:
        rays_o (N, 3), rays_d (N, 3) unit.
    """
    d = (c2w[:, :3, :3] @ dirs_cam[:, :, None])[:, :, 0]
    return c2w[:, :3, 3], d / d.norm(dim=-1, keepdim=True)


def _orbit_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = up / np.linalg.norm(up)
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - a.dot(u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    return e1, e2, u


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Roll-free c2w (4, 4) at `eye` looking at `target` with `up` as the screen's up."""
    zc = eye - target
    zc = zc / np.linalg.norm(zc)
    xc = np.cross(up, zc)
    xc = xc / np.linalg.norm(xc)
    yc = np.cross(zc, xc)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = xc, yc, zc, eye
    return c2w


def orbit_pose(target, radius: float, azimuth_deg: float, elevation_deg: float, up=(0, 0, 1)) -> np.ndarray:
    """c2w (4, 4) of the viewer's orbit camera (formula in export/SCENE_FORMAT.md)."""
    up = np.asarray(up, dtype=np.float64)
    e1, e2, u = _orbit_basis(up)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = radius * (math.cos(el) * math.cos(az) * e1 + math.cos(el) * math.sin(az) * e2 + math.sin(el) * u)
    target = np.asarray(target, dtype=np.float64)
    return look_at(target + offset, target, u)


def spherical_coords(c2w: np.ndarray, target: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radius, azimuth (deg), elevation (deg) of camera centres (N, 4, 4) around `target`."""
    e1, e2, u = _orbit_basis(np.asarray(up, dtype=np.float64))
    v = c2w[:, :3, 3] - target
    radius = np.linalg.norm(v, axis=-1)
    el = np.degrees(np.arcsin(np.clip(v @ u / radius, -1, 1)))
    az = np.degrees(np.arctan2(v @ e2, v @ e1))
    return radius, az, el


def sample_orbit_poses(n: int, rng: np.random.Generator, target, up, radius_range, elevation_range) -> np.ndarray:
    """`n` roll-free poses (n, 4, 4) looking at `target`: centres uniform in area on the
    sphere band (elevation range, degrees) with radius uniform in `radius_range`."""
    lo, hi = np.sin(np.radians(elevation_range[0])), np.sin(np.radians(elevation_range[1]))
    el = np.degrees(np.arcsin(rng.uniform(lo, hi, n)))
    az = rng.uniform(-180.0, 180.0, n)
    r = rng.uniform(radius_range[0], radius_range[1], n)
    return np.stack([orbit_pose(target, r[k], az[k], el[k], up) for k in range(n)])


def scene_up(c2w: np.ndarray) -> np.ndarray:
    """World up axis estimated from the cameras: the mean camera y axis, snapped to the
    nearest coordinate axis when close (Blender scenes: +z)."""
    up = c2w[:, :3, 1].mean(axis=0)
    up = up / max(np.linalg.norm(up), 1e-8)
    k = int(np.argmax(np.abs(up)))
    if abs(up[k]) > 0.9:
        snapped = np.zeros(3)
        snapped[k] = np.sign(up[k])
        return snapped
    return up
