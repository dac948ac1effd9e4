"""The slow, plain twins of gridlf's fast paths: one ray, one sample or one point at a time, in
the most direct form. The tests compare each fast path with its twin; nothing here runs in
training or in the exported graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cell_index", "first_opaque_reference", "octahedral_reference",
           "planes_nearest_reference", "slab_points_reference", "sphere_points_reference",
           "triplane_nearest_reference", "window_points_reference"]


def cell_index(o: Tensor, v: Tensor, t: Tensor, resolution: int) -> Tensor:
    """Flat index x R^2 + y R + z (float) of the cells of an R^3 grid that samples t (..., n) of
    rays o + t v (..., 3) in cell units fall in (clamped to the grid): `march.march_index`'s twin."""
    r = resolution
    p = o[..., None, :] + t[..., None] * v[..., None, :]  # (..., n, 3)
    c = p.floor().clamp(0, r - 1)
    return c[..., 0] * (r * r) + c[..., 1] * r + c[..., 2]


def first_opaque_reference(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, grid: Tensor,
                           resolution: int, opacity: float,
                           median: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`march.first_opaque` one ray and one sample at a time, with the transmittance itself: the
    crossing is where T = 1 - opacity, inside the step that passes it; with `median`, where
    T = sqrt(T_end) if that is larger (half the optical depth: a second pass)."""
    flat = [x.reshape(-1, *x.shape[len(start.shape):]) for x in (o, v, start, step)]
    out = torch.zeros(5, flat[2].shape[0], dtype=v.dtype)
    r = resolution

    def sample(oi: Tensor, vi: Tensor, t: float) -> float:
        c = (oi + t * vi).floor().clamp(0, r - 1).long()
        return float(grid[int(c[0]) * r * r + int(c[1]) * r + int(c[2])])

    for i, (oi, vi, s, h) in enumerate(zip(*flat, strict=True)):
        out[:4, i] = torch.stack([s + n * h, torch.zeros(()), s + n * h, torch.zeros(())])
        if h <= 0:
            continue
        target = 1.0 - opacity
        if median:  # the first pass: the transmittance at the march's end
            end = 1.0
            for k in range(n):
                end *= math.exp(-max(sample(oi, vi, s + (k + 0.5) * h) - 1.0, 0.0) * float(h))
            target = max(target, math.sqrt(end)) if end < 1.0 - 1e-6 else target
        transmittance, cell_found = 1.0, False
        for k in range(n):
            value = sample(oi, vi, s + (k + 0.5) * h)
            if value >= 1.0 and not cell_found:
                out[2, i], out[3, i], cell_found = s + k * h, 1.0, True
            sigma = max(value - 1.0, 0.0)
            after = transmittance * math.exp(-sigma * float(h))
            if out[1, i] == 0 and after <= target and sigma > 0:
                # optical depth is linear in the step: T = target at this fraction of it
                frac = math.log(transmittance / target) / (sigma * float(h))
                out[0, i], out[1, i] = s + (k + min(max(frac, 0.0), 1.0)) * h, 1.0
            transmittance = after
        out[4, i] = 1.0 - transmittance
    return tuple(x.reshape(start.shape) for x in out)


def triplane_nearest_reference(planes: Tensor, resolutions: list[int], x: Tensor) -> Tensor:
    """`features.triplane_nearest` with explicit per-plane indexing."""
    out, offset = [], 0
    for r in resolutions:
        c = (x.clamp(0.0, 1.0) * r).floor().long().clamp(max=r - 1)
        xy, xz, yz = planes[offset:offset + 3 * r * r].reshape(3, r, r, -1)
        out += [xy[c[..., 0], c[..., 1]], xz[c[..., 0], c[..., 2]], yz[c[..., 1], c[..., 2]]]
        offset += 3 * r * r
    return torch.cat(out, dim=-1)


def window_points_reference(origin: Tensor, d: Tensor, t0: Tensor, step: Tensor, k: int, lo: Tensor,
                            size: Tensor) -> Tensor:
    """`march.window_points` as the broadcast it stands for: (origin + t d - lo) / size at
    t = t0 + (j + 1/2) step -> (..., k, 3)."""
    t = t0[..., None] + (torch.arange(k, dtype=d.dtype) + 0.5) * step[..., None]  # (..., k)
    return (origin[..., None, :] + t[..., None] * d[..., None, :] - lo) / size


def planes_nearest_reference(planes: Tensor, resolutions: list[int], x: Tensor) -> Tensor:
    """`features.planes_nearest` one point and one plane at a time."""
    k = x.shape[-2]
    flat = x.reshape(-1, k, 2).clamp(0.0, 1.0)
    rows = []
    for pts in flat:
        feats = []
        for j in range(k):
            offset = 0
            for r in resolutions:
                grid = planes[offset:offset + k * r * r].reshape(k, r, r, -1)
                i0, i1 = (min(int(float(pts[j, a]) * r), r - 1) for a in range(2))
                feats.append(grid[j, i0, i1])
                offset += k * r * r
        rows.append(torch.cat(feats))
    return torch.stack(rows).reshape(*x.shape[:-2], -1)


def slab_points_reference(origin: Tensor, d: Tensor, rotation: Tensor, centre: Tensor, depth: float,
                          bound: Tensor, k: int) -> Tensor:
    """`far.slab_points` as the intersection it stands for: each ray meets the plane at depth
    depth / u_j in front of the mean camera (t solved, the point found), and that point is
    projected through the mean camera's eye; the plane at infinity is taken 1e7 depths away."""
    from .far import far_disparities

    out = torch.zeros(*d.shape[:-1], k, 2, dtype=torch.float64).reshape(-1, k, 2)
    axis = -rotation[:, 2].double()  # the mean camera's forward axis
    for i, (o, v) in enumerate(zip(origin.reshape(-1, 3).double(), d.reshape(-1, 3).double(), strict=True)):
        for j, u in enumerate(far_disparities(k)):
            z = depth / u if u > 0 else 1e7 * depth
            t = (z - float((o - centre.double()) @ axis)) / float(v @ axis)
            p = (o + t * v - centre.double()) @ rotation.double()  # the crossing in the mean camera's frame
            out[i, j] = p[:2] / z
    return (out / (2 * bound.double()) + 0.5).to(d.dtype).reshape(*d.shape[:-1], k, 2)


def octahedral_reference(n: Tensor) -> Tensor:
    """`far.octahedral` one direction at a time, by the octant it lies in."""
    out = []
    for x, y, z in n.reshape(-1, 3).double().tolist():
        a = abs(x) + abs(y) + abs(z)
        x, y, z = x / a, y / a, z / a
        if z < 0:  # the lower half: fold the octant's face out over its corner of the square
            x, y = (1 - abs(y)) * (1.0 if x >= 0 else -1.0), (1 - abs(x)) * (1.0 if y >= 0 else -1.0)
        out.append([x * 0.5 + 0.5, y * 0.5 + 0.5])
    return torch.tensor(out, dtype=n.dtype).reshape(*n.shape[:-1], 2)


def sphere_points_reference(origin: Tensor, d: Tensor, centre: Tensor, half: Tensor, k: int) -> Tensor:
    """`far.sphere_points` as the intersection it stands for: in the box's normalised coordinates
    the ray's far crossing of the sphere of radius 1 / u_j about the centre (the quadratic solved;
    its closest point where it misses), the direction to it mapped by `octahedral_reference`;
    the sphere at infinity is the ray's direction."""
    from .far import far_disparities

    dirs = torch.zeros(*d.shape[:-1], k, 3, dtype=torch.float64).reshape(-1, k, 3)
    for i, (o, v) in enumerate(zip(origin.reshape(-1, 3).double(), d.reshape(-1, 3).double(), strict=True)):
        p = (o - centre.double()) / half.double()
        v = v / half.double()
        v = v / v.norm()
        for j, u in enumerate(far_disparities(k)):
            if u == 0:
                dirs[i, j] = v
                continue
            # |p + t v|^2 = 1 / u^2: t^2 + 2 (p.v) t + |p|^2 - 1 / u^2 = 0, the larger root
            b, c = float(p @ v), float(p @ p) - 1.0 / u ** 2
            t = -b + math.sqrt(max(b * b - c, 0.0))
            dirs[i, j] = p + t * v
    return octahedral_reference(dirs).to(d.dtype).reshape(*d.shape[:-1], k, 2)
