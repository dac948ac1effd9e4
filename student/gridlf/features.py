"""What a point reads: learned tri-planes at the nearest cell, and the encoded view direction."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .march import exact_matmul

__all__ = ["encode_direction", "encoding_order", "planes_nearest", "planes_tv", "triplane_nearest"]


def triplane_nearest(planes: Tensor, resolutions: list[int], x: Tensor) -> Tensor:
    """Features of the xy, xz and yz planes of every resolution at the cell each point
    projects to (no interpolation).

    planes: (sum over r of 3 r^2, C): for each resolution r in order, plane xy then xz then
    yz, each r x r row-major (first coordinate major), r cells over [0, 1]; x: (..., 3),
    clamped to [0, 1]. Returns (..., L * 3 * C), resolution-major. One Gather and a few
    elementwise ops a point: in onnxruntime's CPU and WASM backends interpolation's corners
    and weights cost ~50x the lookup (docs/DESIGN.md weighs bilinear reads against the frame
    time). The slow twin is `reference.triplane_nearest_reference`.
    """
    x = x.clamp(0.0, 1.0)
    index, offset = [], 0
    for r in resolutions:
        c = (x * r).floor().clamp(max=r - 1)
        cx, cy, cz = c[..., 0], c[..., 1], c[..., 2]
        index += [cx * r + cy + offset, cx * r + cz + (offset + r * r), cy * r + cz + (offset + 2 * r * r)]
        offset += 3 * r * r
    return planes[torch.stack(index, dim=-1).long()].flatten(-2)  # (..., L * 3, C) -> (..., L * 3 * C)


def planes_nearest(planes: Tensor, resolutions: list[int], x: Tensor) -> Tensor:
    """Features of a stack of 2-D planes, point j of a ray reading plane j, at the nearest cell.

    planes: (sum over r of k r^2, C): for each resolution r in order, planes 0 .. k - 1, each
    r x r row-major (first coordinate major), r cells over [0, 1]; x: (..., k, 2), clamped to
    [0, 1]. Returns (..., k * L * C), point-major. The slow twin is
    `reference.planes_nearest_reference`."""
    k = x.shape[-2]
    x = x.clamp(0.0, 1.0)
    plane = torch.arange(k, device=x.device, dtype=x.dtype)
    index, offset = [], 0
    for r in resolutions:
        c = (x * r).floor().clamp(max=r - 1)
        index.append(c[..., 0] * r + c[..., 1] + plane * (r * r) + offset)  # (..., k)
        offset += k * r * r
    return planes[torch.stack(index, dim=-1).long()].flatten(-3)  # (..., k, L, C) -> (..., k * L * C)


def planes_tv(planes: Tensor, resolutions: list[int], k: int) -> Tensor:
    """Total variation of a stack of 2-D planes in `planes_nearest`'s layout: over resolutions,
    the mean of the mean squared difference between neighbouring cells along each axis."""
    out, offset = [], 0
    for r in resolutions:
        p = planes[offset:offset + k * r * r].reshape(k, r, r, -1)
        out.append(0.5 * ((p[:, 1:] - p[:, :-1]).square().mean() + (p[:, :, 1:] - p[:, :, :-1]).square().mean()))
        offset += k * r * r
    return torch.stack(out).mean()


def encode_direction(d: Tensor, n_freqs: int) -> Tensor:
    """`positional_encoding` with its columns grouped: [d, sin of every level, cos of every
    level] (..., 3 + 6 n_freqs), level-major in each group (`encoding_order` maps them back).
    One MatMul makes every level's argument (exact: powers of two) and one Sin and one Cos take
    them all, where the per-level form cost onnxruntime 38 ops on (..., 3)."""
    if not n_freqs:
        return d
    scales = 2.0 ** (torch.arange(n_freqs, device=d.device, dtype=d.dtype) - 1)
    cycles = exact_matmul(d, torch.kron(scales[None], torch.eye(3, device=d.device, dtype=d.dtype)))  # (..., 3F)
    arg = (cycles - torch.floor(cycles + 0.5)) * (2 * math.pi)  # reduced to [-pi, pi): see positional_encoding
    return torch.cat([d, torch.sin(arg), torch.cos(arg)], dim=-1)


def encoding_order(n_freqs: int) -> list[int]:
    """The column of `positional_encoding` behind each column of `encode_direction`."""
    sin = [3 + 6 * level + i for level in range(n_freqs) for i in range(3)]
    return [0, 1, 2] + sin + [c + 3 for c in sin]
