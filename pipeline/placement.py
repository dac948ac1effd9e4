"""Placing a captured scene in the teacher's box, from the capture itself.

A capture's world is whatever its tool chose (COLMAP: the first camera's frame, arbitrary scale;
a phone app: gravity-aligned metres). The teacher needs the scene inside `teacher.aabb` with +z
up (the viewer's orbit turns about +z). `place` finds a similarity transform (a rotation, a
uniform scale, a translation) from three facts about the capture:

- centre: the point closest to every camera's optical axis (least squares), which an object
  capture's cameras look at;
- up: the cameras' mean up vector (a photographer holds the phone upright), turned to +z by the
  smallest rotation;
- radius: how far the scene reaches from the centre, from the sparse points (COLMAP) or the
  near/far bounds (LLFF) where the capture has them, else from the cameras: a scene framed by
  the photos fills about the cone of each camera's narrower field of view, so its radius is the
  camera's distance times the sine of half that angle (median over cameras). The radius is
  scaled to the box's half-width, and the centre moved to the box's centre.

Every step is equivariant: the same scene in another world (moved, turned, scaled) is placed in
the same spot, so the same capture read from two layouts gets one transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .cameras import Intrinsics

# a capture whose cameras all look within this angle of their mean direction is forward-facing:
# beyond a quarter turn between opposite cameras they see the scene from its sides, as an orbit does
FORWARD_CONE_DEG = 45.0
SCENE_TYPES = ("object", "360", "forward")
FAR_QUANTILE = 99  # percentile of the points' or far bounds' distances that counts as the surroundings' reach
POINTS_QUANTILE = 95  # percentile of the sparse points' distances that counts as the scene's reach (outliers)
RCOND = 1e-3  # relative singular value below which the axes say nothing about the centre (parallel axes)


@dataclass(frozen=True)
class Placement:
    """A similarity transform from the capture's world to the teacher's.

    matrix: (4, 4) [scale * R | t]: world point p -> scale * R p + t.
    scale: the uniform scale; centre, up (3,): in the capture's world; radius: the scene's reach
    there (capture units); radius_from: what gave it ('points', 'bounds', 'cameras', 'identity').
    far: how far the capture's surroundings reach from the centre (capture units): the sparse
    points' or the LLFF far bounds' farthest (a high percentile), None when the capture does not say.
    """

    matrix: np.ndarray
    scale: float
    centre: np.ndarray
    up: np.ndarray
    radius: float
    radius_from: str
    far: float | None = None

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) R."""
        return self.matrix[:3, :3] / self.scale

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        """(..., 4, 4) camera-to-world in the teacher's world: the camera turned by R, its centre
        moved as a point (the rotation part stays a rotation, not scaled)."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.apply_points(out[..., :3, 3])
        return out

    def apply_points(self, p: np.ndarray) -> np.ndarray:
        """(..., 3) points in the teacher's world."""
        return np.asarray(p, dtype=np.float64) @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def to_json(self) -> dict:
        return {"matrix": self.matrix.tolist(), "scale": self.scale, "centre": self.centre.tolist(),
                "up": self.up.tolist(), "radius": self.radius, "radius_from": self.radius_from, "far": self.far}


def identity() -> Placement:
    """The placement of a scene that is placed already (Blender, toy)."""
    return Placement(np.eye(4), 1.0, np.zeros(3), np.array([0.0, 0.0, 1.0]), 0.0, "identity")


def axes_centre(origins: np.ndarray, dirs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The point closest to every line (origin, direction) in the least-squares sense.

    Minimises sum_k |(I - d_k d_k^T)(x - o_k)|^2. Where the lines are (nearly) parallel, as in a
    forward-facing capture, they do not fix x along their common direction: the solution there
    keeps `prior`'s component (a pseudo-inverse around the prior).

    Args:
        origins: (N, 3); dirs: (N, 3) (any length); prior: (3,).
    Returns:
        (3,).
    """
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    proj = np.eye(3) - d[:, :, None] * d[:, None, :]  # (N, 3, 3) projections off each axis
    a = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    return prior + np.linalg.pinv(a, rcond=RCOND) @ (b - a @ prior)


def rotation_to_z(up: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking unit vector `up` to +z."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(up @ z)
    if c < -1 + 1e-12:  # up is -z: half a turn about x
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def half_fov(k: Intrinsics) -> float:
    """Half the narrower field of view of a camera (radians), from its focal lengths and size."""
    return min(math.atan(0.5 * k.width / k.fx), math.atan(0.5 * k.height / k.fy))


def place(c2w: np.ndarray, cameras: list[Intrinsics], box, points: np.ndarray | None = None,
          bounds: np.ndarray | None = None) -> Placement:
    """The placement of a capture in the teacher's box.

    Args:
        c2w: (N, 4, 4) OpenGL camera-to-world of every frame, in the capture's world.
        cameras: the N frames' intrinsics (their fields of view).
        box: the teacher's box [xmin, ymin, zmin, xmax, ymax, zmax].
        points: optional (M, 3) sparse points of the scene (COLMAP).
        bounds: optional (N, 2) near and far depths of the scene along each camera's axis (LLFF).
    Returns:
        The Placement: centre -> the box's centre, up -> +z, radius -> the box's half-width.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    eyes, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    prior = eyes.mean(0)
    if bounds is not None:  # forward-facing: the axes' common direction is fixed by the depths
        prior = prior + forward.mean(0) * float(np.median(bounds.mean(1)))
    centre = axes_centre(eyes, forward, prior)
    up = c2w[:, :3, 1].mean(0)
    up = up / np.linalg.norm(up)
    distance = np.linalg.norm(eyes - centre, axis=-1)
    far_reach = None
    if points is not None and len(points):
        dist_points = np.linalg.norm(points - centre, axis=-1)
        reach = np.percentile(dist_points, POINTS_QUANTILE)
        # points beyond the cameras are background (walls, sky) that no box around the object holds
        radius, radius_from = min(float(reach), float(np.median(distance))), "points"
        far_reach = float(np.percentile(dist_points, FAR_QUANTILE))
    elif bounds is not None:
        f = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
        near = np.linalg.norm(eyes + f * bounds[:, :1] - centre, axis=-1)
        far = np.linalg.norm(eyes + f * bounds[:, 1:] - centre, axis=-1)
        radius, radius_from = float(np.median(np.maximum(near, far))), "bounds"
        far_reach = float(np.percentile(far, FAR_QUANTILE))
    else:
        sines = np.sin([half_fov(k) for k in cameras])
        radius, radius_from = float(np.median(distance * sines)), "cameras"
    box = np.asarray(box, dtype=np.float64)
    half, box_centre = 0.5 * float((box[3:] - box[:3]).min()), 0.5 * (box[3:] + box[:3])
    scale = half / radius
    rot = rotation_to_z(up)
    matrix = np.eye(4)
    matrix[:3, :3] = scale * rot
    matrix[:3, 3] = box_centre - scale * rot @ centre
    return Placement(matrix, scale, centre, up, radius, radius_from, far_reach)


def place_capture(capture, box) -> Placement:
    """`place` for a pipeline.formats.Capture: every frame of every split, its sparse points, and
    the frames' near/far bounds when every frame has them."""
    frames = capture.frames
    bounds = [f.bounds for f in frames]
    return place(np.stack([f.c2w for f in frames]), [f.intrinsics for f in frames], box, points=capture.points,
                 bounds=None if None in bounds else np.asarray(bounds, dtype=np.float64))


def scene_type(c2w: np.ndarray, masked: bool) -> tuple[str, str]:
    """What a capture is, from its cameras: (type, why).

    - object: every photo has a mask (or an alpha channel): only the object is learned;
    - forward: every camera looks within FORWARD_CONE_DEG of the cameras' mean direction (LLFF's
      forward-facing shots): the scene is what lies in front of them;
    - 360: the rest, cameras around the scene, which has surroundings in every direction.

    c2w: (N, 4, 4) OpenGL camera-to-world (any world: only directions count).
    """
    if masked:
        return "object", "every photo has a mask"
    forward = -np.asarray(c2w, dtype=np.float64)[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    mean = forward.mean(0)
    spread = 90.0 if np.linalg.norm(mean) < 1e-9 else \
        float(np.degrees(np.arccos(np.clip(forward @ (mean / np.linalg.norm(mean)), -1.0, 1.0))).max())
    if spread <= FORWARD_CONE_DEG:
        return "forward", f"every camera looks within {spread:.0f} deg of their mean direction"
    return "360", f"the cameras look {spread:.0f} deg apart from their mean direction: they surround the scene"
