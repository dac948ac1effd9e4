"""Where the pseudo-views look from: MobileR2L-style poses around the scene.

Around an object or a 360 scene: camera centres on the sphere band of the
training cameras (radius and elevation ranges taken from them), looking at the
scene centre, roll-free; optionally a share of jittered training poses. A
forward-facing scene: inside the region the training cameras span, looking
where they look (`forward_distribution`). Deterministic for a seed.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.cameras import look_at, sample_orbit_poses, scene_up, spherical_coords


def pose_distribution(train_c2w: np.ndarray, target: np.ndarray) -> dict:
    """Sphere band of the training cameras around `target`."""
    up = scene_up(train_c2w)
    r, _, el = spherical_coords(train_c2w, target, up)
    return {"target": target.tolist(), "up": up.tolist(),
            "radius": [float(r.min()), float(r.max())], "elevation_deg": [float(el.min()), float(el.max())]}


def sample_poses(n: int, seed: int, train_c2w: np.ndarray, dist: dict, jitter_fraction: float,
                 jitter_deg: float) -> np.ndarray:
    """(n, 4, 4) pseudo-view poses, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    target, up = np.array(dist["target"]), np.array(dist["up"])
    n_jit = int(round(n * jitter_fraction))
    poses = sample_orbit_poses(n - n_jit, rng, target, up, dist["radius"], dist["elevation_deg"])
    if n_jit:
        base = train_c2w[rng.integers(0, len(train_c2w), n_jit)]
        jittered = []
        for c2w in base:
            eye = c2w[:3, 3] - target
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            ang = math.radians(jitter_deg) * rng.uniform(-1, 1)
            # Rodrigues rotation of the camera centre about a random axis through the target
            eye = (eye * math.cos(ang) + np.cross(axis, eye) * math.sin(ang)
                   + axis * axis.dot(eye) * (1 - math.cos(ang)))
            jittered.append(look_at(eye + target, target, up))
        poses = np.concatenate([poses, np.stack(jittered)])
    return poses


def mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations -> the rotation nearest their element-wise mean (SVD projection:
    the chordal L2 mean)."""
    u, _, vt = np.linalg.svd(rotations.mean(0))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def forward_distribution(train_c2w: np.ndarray) -> dict:
    """The region of a forward-facing capture's cameras: their mean orientation, and the box their
    centres span in that camera's frame (x right, y up, z back), plus how far (degrees) the
    cameras turn from the mean orientation."""
    rot = mean_rotation(train_c2w[:, :3, :3])
    centre = train_c2w[:, :3, 3].mean(0)
    local = (train_c2w[:, :3, 3] - centre) @ rot  # centres in the mean camera's frame
    turn = np.degrees(np.arccos(np.clip((np.trace(rot.T @ train_c2w[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return {"type": "forward", "centre": centre.tolist(), "rotation": rot.tolist(),
            "extent": [local.min(0).tolist(), local.max(0).tolist()], "turn_deg": float(turn.max())}


def sample_forward_poses(n: int, seed: int, train_c2w: np.ndarray, dist: dict) -> np.ndarray:
    """(n, 4, 4) poses inside a forward-facing capture's region: centres uniform in the box of the
    training centres (mean frame), orientations between the mean and a random training camera's
    (a random share of the way along the shortest rotation), so they look where the photos look."""
    rng = np.random.default_rng(seed)
    rot, centre = np.array(dist["rotation"]), np.array(dist["centre"])
    lo, hi = np.array(dist["extent"][0]), np.array(dist["extent"][1])
    poses = np.tile(np.eye(4), (n, 1, 1))
    local = lo + (hi - lo) * rng.uniform(size=(n, 3))
    poses[:, :3, 3] = centre + local @ rot.T
    for k, j in enumerate(rng.integers(0, len(train_c2w), n)):
        poses[k, :3, :3] = rot @ _rotation_power(rot.T @ train_c2w[j, :3, :3], rng.uniform())
    return poses


def _rotation_power(r: np.ndarray, s: float) -> np.ndarray:
    """r^s for a rotation r (3, 3): the same axis, s times the angle (Rodrigues)."""
    angle = math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    if angle < 1e-9:
        return np.eye(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * math.sin(angle))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = s * angle
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k
