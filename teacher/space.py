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
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

__all__ = ["MAX_LEVELS", "NDCFrame", "Space", "contract_to_unisphere", "levels_for_reach", "ndc_density_scale",
           "ndc_frame", "ndc_points", "ndc_rays", "space_for"]

MAX_LEVELS = 8  # nerfacc's kernel holds at most 8 grid levels (MAX_GRID_LEVELS)
# nerfacc's unbounded recipe (examples/train_ngp_nerf_occ.py): 4 levels, the outer box 8x the
# object's, when nothing in the capture says how far its surroundings reach
DEFAULT_LEVELS = 4


@dataclass(frozen=True)
class NDCFrame:
    """Normalised device coordinates of one reference camera (LLFF's NeRF): camera-frame points
    (x, y, z), z < 0 in front, -> (-sx x/z, -sy y/z, 1 + 2 near/z), so the plane z = -near is
    ndc z = -1 and infinity ndc z = 1, with ndc z linear in disparity.

    c2w: the reference camera, 12 floats (3 x 4, OpenGL axes, row-major); sx, sy: 2 fx / W and
    2 fy / H of its lens; near: the plane's depth (teacher units); box: the ndc box (6 floats)
    that the training rays cross; span: the teacher box's longest side, which an ndc ray's
    parameter runs over from the plane to infinity, so that a ray takes as many steps through the
    ndc box as through an object's box."""

    c2w: tuple[float, ...]
    sx: float
    sy: float
    near: float
    box: tuple[float, ...]
    span: float

    def rotation_centre(self, like: Tensor) -> tuple[Tensor, Tensor]:
        m = torch.tensor(self.c2w, dtype=like.dtype, device=like.device).reshape(3, 4)
        return m[:, :3], m[:, 3]


@dataclass(frozen=True)
class Space:
    """How the teacher covers space: contract (unbounded positions), the occupancy grid's levels
    and the step's growth with distance (dt = max(t cone_angle, render_step_size)); or, with
    ndc, a box over one camera's normalised device coordinates that rays are mapped into."""

    contract: bool = False
    levels: int = 1
    cone_angle: float = 0.0
    ndc: NDCFrame | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if self.ndc is None:
            del d["ndc"]
        return d

    @classmethod
    def from_json(cls, d: dict | None) -> Space:
        if not d:
            return cls()
        ndc = d.get("ndc")
        if ndc is not None:
            ndc = NDCFrame(tuple(map(float, ndc["c2w"])), float(ndc["sx"]), float(ndc["sy"]), float(ndc["near"]),
                           tuple(map(float, ndc["box"])), float(ndc["span"]))
        return cls(bool(d["contract"]), int(d["levels"]), float(d["cone_angle"]), ndc)


def ndc_points(x: Tensor, frame: NDCFrame) -> Tensor:
    """World points (..., 3) in front of the reference camera -> their ndc (..., 3)."""
    rot, centre = frame.rotation_centre(x)
    p = (x - centre) @ rot  # rot^T (x - centre): the camera frame
    z = p[..., 2]
    return torch.stack([-frame.sx * p[..., 0] / z, -frame.sy * p[..., 1] / z, 1.0 + 2.0 * frame.near / z], -1)


def ndc_density_scale(x: Tensor, frame: NDCFrame) -> tuple[Tensor, Tensor]:
    """World points (..., 3) -> their ndc (..., 3) and the factor (...) that turns an ndc teacher's
    density (per unit of the ndc ray's parameter s) into one per world unit, along the reference
    camera's axis: ds/dt = span near / depth^2 (the ndc z of a ray is -1 + 2 s / span and
    1 + 2 near / z); 0 nearer than the plane, which the ndc space leaves out. A ray at angle a to
    the axis gets cos(a) times this: the students' surfaces need where density builds up, and
    forward-facing rays stay near the axis."""
    rot, centre = frame.rotation_centre(x)
    depth = -((x - centre) @ rot)[..., 2]
    scale = torch.where(depth > frame.near, frame.span * frame.near / depth.clamp(min=frame.near) ** 2,
                        torch.zeros_like(depth))
    return ndc_points(x, frame), scale


def ndc_rays(o: Tensor, d: Tensor, frame: NDCFrame) -> tuple[Tensor, Tensor]:
    """World rays o + t d (n, 3) -> ndc rays o' + s d' whose s in [0, span] runs from the plane
    z = -near to infinity (NeRF's ndc_rays: the origin first moved along the ray to the plane;
    d' scaled by 1 / span). A ray must look into the reference camera's half-space (d_z < 0)."""
    rot, centre = frame.rotation_centre(o)
    o_c, d_c = (o - centre) @ rot, d @ rot
    dz = d_c[:, 2].clamp(max=-1e-6)
    o_c = o_c + (-(frame.near + o_c[:, 2]) / dz)[:, None] * d_c
    ox, oy, oz = o_c.unbind(-1)
    o_n = torch.stack([-frame.sx * ox / oz, -frame.sy * oy / oz, 1.0 + 2.0 * frame.near / oz], -1)
    d_n = torch.stack([-frame.sx * (d_c[:, 0] / dz - ox / oz), -frame.sy * (d_c[:, 1] / dz - oy / oz),
                       -2.0 * frame.near / oz], -1) / frame.span
    return o_n, d_n


def ndc_frame(c2w: Tensor, fx: float, fy: float, width: int, height: int, aabb: list[float],
              corner_rays: tuple[Tensor, Tensor]) -> tuple[NDCFrame, str]:
    """The ndc frame of a forward-facing capture, from its training cameras (N, 4, 4) (teacher
    world), its lens, the teacher's box (which the placed scene fills) and rays through the edges
    of every training frame: NeRF's mean pose (mean centre, mean viewing and up axes), the plane
    at 3/4 of the box's nearest depth from it (NeRF: 3/4 of the nearest LLFF bound), and the ndc
    box that holds every edge ray from the plane to infinity."""
    eyes = c2w[:, :3, 3].double()
    back = c2w[:, :3, 2].double().mean(0)
    back = back / back.norm()
    up = c2w[:, :3, 1].double().mean(0)
    right = torch.linalg.cross(up, back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    rot = torch.stack([right, up, back], 1)
    centre = eyes.mean(0)
    lo, hi = torch.tensor(aabb[:3], dtype=torch.float64), torch.tensor(aabb[3:], dtype=torch.float64)
    corners = torch.stack(torch.meshgrid(*[torch.stack([lo[i], hi[i]]) for i in range(3)], indexing="ij"), -1)
    depth = float(((centre - corners.reshape(-1, 3)) @ back).min())
    span = float((hi - lo).max())
    if depth <= 0:
        raise ValueError("the teacher's box reaches behind the cameras' mean pose: not a forward-facing scene for ndc")
    near = 0.75 * depth
    c2w_ref = torch.cat([rot, centre[:, None]], 1).float()
    tmp = NDCFrame(tuple(c2w_ref.reshape(-1).tolist()), 2 * fx / width, 2 * fy / height, near, (), span)
    o_n, d_n = ndc_rays(corner_rays[0].float(), corner_rays[1].float(), tmp)
    ends = torch.cat([o_n, o_n + span * d_n])
    box = (*ends[:, :2].amin(0).tolist(), -1.0, *ends[:, :2].amax(0).tolist(), 1.0)
    frame = replace(tmp, box=tuple(box))
    return frame, (f"ndc of the cameras' mean pose, plane at depth {near:.3g}, box x [{box[0]:.2f}, {box[3]:.2f}] "
                   f"y [{box[1]:.2f}, {box[4]:.2f}]")


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
