"""The teacher's space: one box for an object, all of space for a scene with surroundings.

An object (masked photos, a Blender scene) lives in `teacher.aabb`; rays march the box's
occupancy grid in constant steps, and what lies outside is the background colour.

A scene with surroundings (a 360 capture without masks, a forward-facing shot) reaches to the
horizon. As in nerfacc's unbounded examples (after mip-NeRF 360), the field reads positions
through a contraction: the ball inscribed in the box keeps its coordinates, and the rest of
space is squeezed into a shell around it (`contract_to_unisphere`), so a hash grid of finite
size covers everything. The occupancy grid has nested levels, level l the box scaled 2^l about
its centre, each at the same resolution (fine cells near the object, coarse ones far away), and
the step along a ray grows with distance (cone_angle): a far surface covers fewer pixels and
needs fewer samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["MAX_LEVELS", "Space", "contract_to_unisphere", "levels_for_reach", "space_for"]

MAX_LEVELS = 8  # nerfacc's kernel holds at most 8 grid levels (MAX_GRID_LEVELS)
# nerfacc's unbounded recipe (examples/train_ngp_nerf_occ.py): 4 levels, the outer box 8x the
# object's, when nothing in the capture says how far its surroundings reach
DEFAULT_LEVELS = 4


@dataclass(frozen=True)
class Space:
    """How the teacher covers space: contract (unbounded positions), the occupancy grid's levels
    and the step's growth with distance (dt = max(t cone_angle, render_step_size))."""

    contract: bool = False
    levels: int = 1
    cone_angle: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> Space:
        return cls() if not d else cls(bool(d["contract"]), int(d["levels"]), float(d["cone_angle"]))


def contract_to_unisphere(x: Tensor, aabb: Tensor) -> Tensor:
    """World points (..., 3) -> [0, 1]^3: the box mapped to [-1, 1]^3; inside the unit ball
    unchanged, outside it x -> (2 - 1/|x|) x/|x| (mip-NeRF 360's contraction, Euclidean norm),
    so all of space fits the ball of radius 2; then scaled by 1/4 and shifted to [0, 1]^3.
    Continuous, monotone along every ray from the centre, and |x| -> infinity reaches the
    boundary sphere (radius 1/2 about (1/2, 1/2, 1/2))."""
    lo, hi = aabb[:3], aabb[3:]
    x = (x - lo) / (hi - lo) * 2.0 - 1.0
    mag = x.norm(dim=-1, keepdim=True)
    outer = (2.0 - 1.0 / mag.clamp(min=1.0)) * (x / mag.clamp(min=1.0))
    x = torch.where(mag > 1.0, outer, x)
    return x / 4.0 + 0.5


def levels_for_reach(reach: float | None, half_width: float) -> tuple[int, str]:
    """Occupancy-grid levels whose outer box (half-width half_width 2^(L-1)) holds the scene's
    reach, a distance from the box's centre in teacher units; (levels, why). Unknown reach:
    nerfacc's 4 levels."""
    if reach is None or not math.isfinite(reach) or reach <= 0:
        return DEFAULT_LEVELS, f"{DEFAULT_LEVELS} levels (nerfacc's unbounded recipe: the capture gives no far bound)"
    levels = 1 + max(0, math.ceil(math.log2(reach / half_width)))
    levels = min(max(levels, 2), MAX_LEVELS)
    outer = half_width * 2 ** (levels - 1)
    return levels, f"{levels} levels: the outer box reaches {outer:.3g} for a scene reaching {reach:.3g}"


def space_for(scene_type: str, aabb: list[float], cone_angle: float, reach: float | None) -> tuple[Space, str]:
    """The teacher's space for a scene type ('object', '360', 'forward'); (space, why)."""
    if scene_type == "object":
        return Space(), "an object: one box, constant steps"
    half = 0.5 * min(b - a for a, b in zip(aabb[:3], aabb[3:], strict=True))
    levels, why = levels_for_reach(reach, half)
    return Space(contract=True, levels=levels, cone_angle=cone_angle), f"{scene_type}: contracted space, {why}"
