"""The teacher's surfaces as an occupancy grid, for students that anchor points on them.

The estimator's own grid (`OccGridEstimator.binaries`) is made for sampling: it keeps
every cell whose density ever passed a low threshold, floaters included (4% of lego's
128^3 cells; nearly every ray through the box hits one). Here a cell is occupied when
the teacher's density somewhere in it (the max over jittered samples) makes the cell
itself at least `alpha` opaque: sigma * cell length >= -ln(1 - alpha). The threshold is
in opacity, so it does not depend on the scene's units or the grid's resolution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .field import NGPField


@torch.no_grad()
def surface_occupancy(field: NGPField, aabb: Tensor, resolution: int, alpha: float = 0.5, samples: int = 4,
                      chunk: int = 1 << 18, seed: int = 0) -> Tensor:
    """(R, R, R) bool over the box `aabb` (6,), index [x, y, z]: cells at least `alpha` opaque
    along their own length (the mean of the box's cell sizes), judged by the max density of
    `samples` uniform random points in each cell."""
    lo, hi = aabb[:3].float(), aabb[3:].float()
    cell = (hi - lo) / resolution
    sigma = -math.log(1.0 - alpha) / float(cell.mean())
    r = resolution
    grid = torch.stack(torch.meshgrid(*[torch.arange(r, dtype=torch.float32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(seed)
    dev = next(field.parameters()).device
    best = torch.zeros(r ** 3)
    for _ in range(samples):
        x = lo + (grid + torch.rand(grid.shape, generator=gen)) * cell
        for start in range(0, len(x), chunk):
            d = field.query_density(x[start:start + chunk].to(dev)).reshape(-1).float().cpu()
            best[start:start + chunk] = torch.maximum(best[start:start + chunk], d)
    return (best >= sigma).reshape(r, r, r)
