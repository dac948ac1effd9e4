"""What a pixel sees beyond the scene box: the far field of a scene with surroundings.

A capture without masks (a walk around an object in a room, a forward-facing shot) shows
surfaces the scene box does not hold. The teacher covers them in contracted space
(teacher/space.py: the box's inscribed ball keeps its coordinates, the rest of space is
squeezed into a shell around it). The student reads the same space: K points along each ray,
equally spaced in disparity from the camera's distance to the box centre out to infinity (the
last point is the ray's direction alone, an environment over direction), are contracted as the
teacher contracts positions and read coarse learned tri-planes over the contracted ball. A small
MLP maps their features and the view direction to the colour behind the near surface.

Disparity steps put the points where contraction puts equal room (a far wall and the horizon
are a few cells apart); they follow the cameras, not a scene's units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .march import exact_matmul

__all__ = ["FAR_STRIDE", "far_disparities", "far_points"]

# one far ray per FAR_STRIDE x FAR_STRIDE pixels (each pixel takes its block's colour): the far
# field cost 4x less this way, the frame on WASM at the capture profile's 128 px needs it, and
# what lies beyond the box is coarse in the teacher too (docs/DESIGN.md, "the far field")
FAR_STRIDE = 2


def far_disparities(k: int) -> list[float]:
    """u_j = (k - 1 - j) / k, j < k: the disparity (base distance / distance) of each far point;
    the last is 0 (infinity), so k = 1 is an environment over direction alone."""
    return [(k - 1 - j) / k for j in range(k)]


def far_points(origin: Tensor, d: Tensor, centre: Tensor, half: Tensor, k: int) -> Tensor:
    """The k far points of rays origin + t d (..., 3), contracted and mapped to [0, 1]^3 like the
    teacher's positions (`teacher.space.contract_to_unisphere` over the box centre +- half) ->
    (..., k, 3).

    In the box's normalised coordinates (o_n, unit direction v), point j sits at distance
    s / u_j, s = |o_n| (the camera's distance to the centre). With y = u o_n + s v (finite at
    u = 0, where the point is at infinity), the point is y / u, its norm |y| / u, and the
    contraction (2 - 1/|x|) x/|x| reads (2 - u/|y|) y/|y|: no division by u outside the unit ball.
    The slow twin is `reference.far_points_reference`."""
    o = (origin - centre) / half
    v = d / half
    v = v / torch.sqrt((v * v).sum(dim=-1, keepdim=True))
    s = torch.sqrt((o * o).sum(dim=-1, keepdim=True))  # (..., 1)
    u = (k - 1 - torch.arange(k, device=d.device, dtype=d.dtype)) / k  # far_disparities(k)
    # y_j = u_j o + s v for every j at once: one MatMul of [o, s v] (..., 6) by (6, 3k)
    eye = torch.eye(3, device=d.device, dtype=d.dtype)
    spread = torch.cat([torch.kron(u[None], eye), eye.repeat(1, k)])
    y = exact_matmul(torch.cat([o, s * v], dim=-1), spread).reshape(*o.shape[:-1], k, 3)
    norm = torch.sqrt((y * y).sum(dim=-1, keepdim=True)).clamp(min=1e-6)  # (..., k, 1)
    uu = u[:, None]
    outside = norm > uu  # the point lies beyond the unit ball
    x = torch.where(outside, (2.0 - uu / norm) * (y / norm), y / uu.clamp(min=1e-6))
    return x * 0.25 + 0.5
