"""Where the pseudo-views look from: MobileR2L-style poses around the scene.

Camera centres on the sphere band of the training cameras (radius and
elevation ranges taken from them), looking at the scene centre, roll-free;
optionally a share of jittered training poses. Deterministic for a seed.
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
