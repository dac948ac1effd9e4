"""The teacher's surfaces as an occupancy grid, for students that anchor points on them.

The estimator's own grid (`OccGridEstimator.binaries`) is made for sampling: it keeps
every cell whose density ever passed a low threshold, floaters included (4% of lego's
128^3 cells; nearly every ray through the box hits one). Here a cell is occupied when
the teacher's density somewhere in it (the max over jittered samples) makes the cell
itself at least `alpha` opaque: sigma * cell length >= -ln(1 - alpha). The threshold is
in opacity, so it does not depend on the scene's units or the grid's resolution. Beside it,
the mean density per cell: students that march it stop where a ray's opacity builds up, not
at a cell whose dense part the ray only grazes (lego: a cell a ray merely clips stopped 8% of
the rays more than 8 cells in front of the teacher's depth).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .field import NGPField
from .space import ndc_density_scale


def world_density(field: NGPField, x: Tensor) -> Tensor:
    """The teacher's density at world points (N, 3), per world unit: an ndc teacher's density
    (per unit of its ndc rays' parameter) scaled by `ndc_density_scale`."""
    ndc = getattr(getattr(field, "space", None), "ndc", None)  # a field without a space: an object's
    if ndc is None:
        return field.query_density(x)
    u, scale = ndc_density_scale(x, ndc)
    return field.query_density(u) * scale


@torch.no_grad()
def surface_grids(field: NGPField, aabb: Tensor, resolution: int, alpha: float = 0.5, samples: int = 4,
                  chunk: int = 1 << 18, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The teacher's density over `samples` uniform random points in each cell of an (R, R, R)
    grid over the box `aabb` (6,), index [x, y, z] -> occupied (bool: the max density makes the
    cell at least `alpha` opaque along its own length, the mean of the box's cell sizes) and
    density (float32: the mean, world units; a ray through the grid accumulates about the
    teacher's optical depth from it)."""
    lo, hi = aabb[:3].float(), aabb[3:].float()
    cell = (hi - lo) / resolution
    sigma = -math.log(1.0 - alpha) / float(cell.mean())
    r = resolution
    grid = torch.stack(torch.meshgrid(*[torch.arange(r, dtype=torch.float32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(seed)
    dev = next(field.parameters()).device
    best, total = torch.zeros(r ** 3), torch.zeros(r ** 3)
    for _ in range(samples):
        x = lo + (grid + torch.rand(grid.shape, generator=gen)) * cell
        for start in range(0, len(x), chunk):
            d = world_density(field, x[start:start + chunk].to(dev)).reshape(-1).float().cpu()
            best[start:start + chunk] = torch.maximum(best[start:start + chunk], d)
            total[start:start + chunk] += d
    return (best >= sigma).reshape(r, r, r), (total / samples).reshape(r, r, r)


def surface_occupancy(field: NGPField, aabb: Tensor, resolution: int, alpha: float = 0.5, samples: int = 4,
                      chunk: int = 1 << 18, seed: int = 0) -> Tensor:
    """`surface_grids`' occupied cells alone: (R, R, R) bool."""
    return surface_grids(field, aabb, resolution, alpha, samples, chunk, seed)[0]
