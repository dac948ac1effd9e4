"""What gridlf takes from the teacher: its occupied cells and mean density, packed for the march.

The student stage computes both grids from the trained teacher (teacher/occupancy.py:
`surface_grids`) at `occupancy_resolution`; `pack_density` puts them in one buffer of the
graph, and `cell_box` gives the boxes the march and the feature planes span.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cell_box", "dilate_cells", "pack_density", "pool_to"]


def dilate_cells(cells: Tensor, k: int) -> Tensor:
    """(R, R, R) occupied cells (bool or 0/1 float) grown by k cells along every axis and
    diagonal (a (2k + 1)^3 max) -> (R, R, R) bool."""
    grown = cells.float()
    if k:
        grown = F.max_pool3d(grown[None, None], kernel_size=2 * k + 1, stride=1, padding=k)[0, 0]
    return grown > 0


def cell_box(cells: Tensor) -> Tensor | None:
    """(R, R, R) bool -> (6,) float: the lower and upper corners, in cell units, of the box
    around the true cells; None when there are none."""
    idx = cells.nonzero()
    if not len(idx):
        return None
    return torch.cat([idx.amin(dim=0), idx.amax(dim=0) + 1]).float()


def pool_to(occupancy: Tensor, density: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """The teacher's grids (R0, R0, R0), occupied cells (bool) and mean density, at `resolution`
    (a divisor of R0): a cell is occupied when any of its sub-cells is, its density their mean.
    ValueError, naming the setting, when R0 is not a multiple."""
    r0 = occupancy.shape[-1]
    if occupancy.shape != (r0, r0, r0) or density.shape != occupancy.shape or r0 % resolution:
        raise ValueError(f"the teacher's grids {tuple(occupancy.shape)} and {tuple(density.shape)} cannot be pooled "
                         f"to {resolution}^3 (student.gridlf.occupancy_resolution must divide {r0})")
    k = r0 // resolution
    occ = F.max_pool3d(occupancy.float()[None, None], kernel_size=k)[0, 0] > 0
    mean = F.avg_pool3d(density.float()[None, None], kernel_size=k)[0, 0]
    return occ, mean


def pack_density(occupied: Tensor, density: Tensor, dilate: int) -> Tensor:
    """Two grids in one buffer: (R, R, R) bool occupied cells and their mean density (index
    [x, y, z]) -> (R^3,) float, index x R^2 + y R + z: 0 outside the occupied cells dilated by
    `dilate` cells, else 1 + the density. `march.first_opaque` reads both from one Gather a
    sample (8 MB at R = 128)."""
    r = occupied.shape[-1]
    if occupied.shape != (r, r, r) or density.shape != occupied.shape:
        raise ValueError(f"occupied cells {tuple(occupied.shape)} and density {tuple(density.shape)}: need two "
                         "(R, R, R) grids")
    return (dilate_cells(occupied, dilate).float() * (1.0 + density.float().clamp(min=0.0))).reshape(-1)
