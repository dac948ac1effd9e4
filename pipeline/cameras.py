"""Camera math shared by every stage: pinhole rays, orbit poses, pose sampling.

Convention (NeRF Blender scenes, OpenGL): a camera-to-world matrix `c2w`
(4, 4) has columns (x right, y up, z backwards, eye); the camera looks down
its -z axis. Pixel (i, j) (column, row) has its centre at (i + 0.5, j + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Focal length in pixels of a pinhole camera with horizontal FOV `camera_angle_x` (rad)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera's intrinsics, in pixels of a width x height image.

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


def camera_directions(intrinsics: Intrinsics, device=None) -> Tensor:
    """Unnormalised ray directions in the camera frame, (height, width, 3), z = -1."""
    k = intrinsics
    j, i = torch.meshgrid(
        torch.arange(k.height, dtype=torch.float32, device=device),
        torch.arange(k.width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    x = (i + 0.5 - k.cx) / k.fx
    y = -(j + 0.5 - k.cy) / k.fy
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


def pixel_directions(pixel: Tensor, k: Tensor, width: int) -> Tensor:
    """Camera-frame directions (unnormalised, z = -1) of flat pixel indices, each through its
    own view's intrinsics: the teacher's ray batches draw pixels from every view.

    Args:
        pixel: (N,) row-major pixel index j * width + i.
        k: (N, 4) each pixel's view's (fx, fy, cx, cy).
        width: image width in pixels (one size per split).
    Returns:
        (N, 3), equal to `camera_directions(...)[j, i]` of the pixel's view.
    """
    i = (pixel % width).float() + 0.5
    j = torch.div(pixel, width, rounding_mode="floor").float() + 0.5
    x = (i - k[:, 2]) / k[:, 0]
    y = -(j - k[:, 3]) / k[:, 1]
    return torch.stack([x, y, -torch.ones_like(x)], dim=-1)


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
