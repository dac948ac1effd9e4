"""The CI scene: a few analytic shapes ray-cast exactly into the Blender layout.

Two spheres (one with a checker texture) and a box on a transparent
background, Lambertian-shaded with a fixed light so the colours are
view-independent. With `surroundings`, the shapes stand inside a textured
environment sphere (no transparent pixel), seen from an orbit (360) or from a
patch of cameras facing them (forward). One ray through each pixel centre; alpha is 1 on a hit,
0 elsewhere, so every pixel is known in closed form (tests check this).
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .cameras import focal_from_fov, orbit_pose, sample_orbit_poses
from .config import ToySceneConfig
from .io import atomic_write_bytes, atomic_write_text

ENV_RADIUS = 12.0  # the surroundings' sphere (toy.surroundings): well beyond the cameras (radius 3.2)
LIGHT = np.array([0.6, 0.3, 0.75]) / np.linalg.norm([0.6, 0.3, 0.75])
AMBIENT = 0.35

# (centre, radius, base colour, checker?)
SPHERES = [
    (np.array([-0.35, 0.05, 0.0]), 0.45, np.array([0.9, 0.25, 0.2]), True),
    (np.array([0.35, -0.45, 0.35]), 0.2, np.array([0.2, 0.8, 0.3]), False),
]
BOX_MIN = np.array([0.15, -0.05, -0.6])
BOX_MAX = np.array([0.7, 0.5, 0.1])
BOX_FACE_COLOURS = np.array([  # -x, +x, -y, +y, -z, +z
    [0.2, 0.3, 0.9], [0.3, 0.5, 1.0], [0.9, 0.8, 0.2], [1.0, 0.9, 0.4], [0.6, 0.6, 0.6], [0.95, 0.95, 0.95],
])


def _shade(colour: np.ndarray, normal: np.ndarray) -> np.ndarray:
    lambert = np.clip((normal * LIGHT).sum(-1, keepdims=True), 0.0, None)
    return colour * (AMBIENT + (1.0 - AMBIENT) * lambert)


def _checker(p: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """1 or 0 per point on a sphere: 8 x 4 checker in longitude x latitude."""
    v = p - centre
    lon = np.arctan2(v[:, 1], v[:, 0])
    lat = np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1]))
    return ((np.floor(lon / (2 * np.pi) * 8) + np.floor(lat / np.pi * 4)) % 2).astype(np.float64)


def cast(rays_o: np.ndarray, rays_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact first hit of rays (N, 3) with the scene -> (rgb (N, 3), alpha (N,))."""
    n = rays_o.shape[0]
    t_best = np.full(n, np.inf)
    rgb = np.zeros((n, 3))
    for centre, radius, colour, checker in SPHERES:
        oc = rays_o - centre
        b = (oc * rays_d).sum(-1)
        c = (oc * oc).sum(-1) - radius**2
        disc = b * b - c
        hit = disc >= 0
        t = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
        t = np.where(t > 1e-6, t, np.inf)
        closer = t < t_best
        if closer.any():
            p = rays_o[closer] + t[closer, None] * rays_d[closer]
            normal = (p - centre) / radius
            base = np.broadcast_to(colour, p.shape).copy()
            if checker:
                base = base * (0.55 + 0.45 * _checker(p, centre)[:, None])
            rgb[closer] = _shade(base, normal)
            t_best[closer] = t[closer]
    # slab method for the box
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / rays_d
        t0 = (BOX_MIN - rays_o) * inv
        t1 = (BOX_MAX - rays_o) * inv
    t_near = np.minimum(t0, t1)
    t_enter = np.nanmax(t_near, axis=-1)
    t_exit = np.nanmin(np.maximum(t0, t1), axis=-1)
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    t = np.where(hit, t_enter, np.inf)
    closer = t < t_best
    if closer.any():
        axis = np.nanargmax(t_near[closer], axis=-1)
        sign_neg = rays_d[closer, axis] > 0  # entering through the -axis face
        face = axis * 2 + np.where(sign_neg, 0, 1)
        normal = np.zeros((closer.sum(), 3))
        normal[np.arange(len(axis)), axis] = np.where(sign_neg, -1.0, 1.0)
        rgb[closer] = _shade(BOX_FACE_COLOURS[face], normal)
        t_best[closer] = t[closer]
    alpha = np.isfinite(t_best).astype(np.float64)
    return rgb, alpha


def environment(rays_o: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
    """The surroundings: a sphere of radius ENV_RADIUS about the origin seen from inside, painted
    (unlit) with a smooth hue over longitude and a 12 x 6 checker -> rgb (N, 3) where each ray
    (starting inside it) meets it."""
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - ENV_RADIUS ** 2
    t = -b + np.sqrt(b * b - c)  # c < 0 inside: one root ahead
    p = rays_o + t[:, None] * rays_d
    lon = np.arctan2(p[:, 1], p[:, 0])
    lat = np.arcsin(np.clip(p[:, 2] / ENV_RADIUS, -1.0, 1.0))
    hue = np.stack([np.cos(lon), np.cos(lon - 2.1), np.cos(lon + 2.1)], -1) * 0.3 + 0.55
    checker = (np.floor(lon / (2 * np.pi) * 12) + np.floor(lat / np.pi * 6)) % 2
    return hue * (0.7 + 0.3 * checker[:, None]) * (0.75 + 0.25 * np.sin(lat)[:, None])


def render_view(c2w: np.ndarray, size: int, focal: float, surroundings: bool = False) -> np.ndarray:
    """RGBA image (size, size, 4) float64 in [0, 1] for one camera (OpenGL c2w); with
    surroundings, the environment behind the shapes and alpha 1 everywhere."""
    j, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    d_cam = np.stack([(i + 0.5 - size / 2) / focal, -(j + 0.5 - size / 2) / focal, -np.ones(i.shape)], -1)
    d = d_cam.reshape(-1, 3) @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(c2w[:3, 3], d.shape)
    rgb, alpha = cast(o, d)
    if surroundings:
        rgb = np.where(alpha[:, None] > 0, rgb, environment(o, d))
        alpha = np.ones_like(alpha)
    rgb = rgb * alpha[:, None]  # transparent pixels are black, like Blender's exports
    return np.concatenate([rgb, alpha[:, None]], -1).reshape(size, size, 4)


def forward_poses(n: int, rng: np.random.Generator | None, radius: float) -> np.ndarray:
    """Forward-facing cameras (n, 4, 4): on a patch of the plane y = -radius, +-radius/5 wide and
    high, all looking along +y (LLFF's shots); rng None: an even row across the patch (test)."""
    half = 0.2 * radius
    if rng is None:
        xz = np.stack([np.linspace(-half, half, n), np.linspace(0.5 * half, -0.5 * half, n)], -1)
    else:
        xz = rng.uniform(-half, half, (n, 2))
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # x right, y up -> +z, looking +y
    poses[:, :3, 3] = np.stack([xz[:, 0], np.full(n, -radius), xz[:, 1]], -1)
    return poses


def split_poses(cfg: ToySceneConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    up = np.array([0.0, 0.0, 1.0])
    if cfg.surroundings == "forward":
        return {"train": forward_poses(cfg.n_train, rng, cfg.radius), "val": forward_poses(cfg.n_val, rng, cfg.radius),
                "test": forward_poses(cfg.n_test, None, cfg.radius)}
    return {
        "train": sample_orbit_poses(cfg.n_train, rng, np.zeros(3), up, (cfg.radius, cfg.radius), (5.0, 75.0)),
        "val": sample_orbit_poses(cfg.n_val, rng, np.zeros(3), up, (cfg.radius, cfg.radius), (5.0, 75.0)),
        # the test orbit: evenly spaced azimuths at 30 degrees elevation
        "test": np.stack([orbit_pose(np.zeros(3), cfg.radius, 360.0 * k / cfg.n_test + 15.0, 30.0, up)
                          for k in range(cfg.n_test)]),
    }


def write_toy_scene(cfg: ToySceneConfig, root: Path) -> None:
    """Render the toy scene into `root` in the Blender layout (idempotent)."""
    root.mkdir(parents=True, exist_ok=True)
    focal = focal_from_fov(cfg.size, cfg.camera_angle_x)
    for split, poses in split_poses(cfg).items():
        (root / split).mkdir(exist_ok=True)
        frames = []
        for k, c2w in enumerate(poses):
            rgba = render_view(c2w, cfg.size, focal, cfg.surroundings != "none")
            png = iio.imwrite("<bytes>", np.round(rgba * 255).astype(np.uint8), extension=".png")
            atomic_write_bytes(root / split / f"r_{k}.png", png)
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": cfg.camera_angle_x, "frames": frames}
        atomic_write_text(root / f"transforms_{split}.json", json.dumps(meta, indent=2))


def toy_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Tight axis-aligned bounds of the toy geometry (for tests)."""
    lo = np.minimum.reduce([c - r for c, r, _, _ in SPHERES] + [BOX_MIN])
    hi = np.maximum.reduce([c + r for c, r, _, _ in SPHERES] + [BOX_MAX])
    return lo, hi
