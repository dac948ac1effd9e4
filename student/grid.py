"""The surface-anchored feature-grid light field (student kind `gridlf`).

pose (4, 4) -> one ray per output pixel. Where along a ray is the scene? The teacher
already knows: its occupancy grid (max-pooled to `occupancy_resolution`, dilated, a
buffer of the graph) is marched on rays every `march_stride` pixels, from where the ray
enters the scene box to where it leaves, one sample per cell; the first occupied sample
anchors the ray (`surface: pixel` and `density` then give each pixel its own surface between
its neighbourhood's anchors; `density`, the lego config's, where the pixel's ray through the
teacher's mean density turns half opaque, with the block march on the same density and only
over the box of the occupied cells). K points in a window of `window` cells from the anchor read dense
multi-resolution feature grids (trilinear, one Gather of the 8 corners per grid), and a
small MLP maps the features and the encoded view direction (with `ray_opacity`, also the
pixel's opacity from its density march) to colour. Rays whose march finds nothing are the
background colour (learned).

Capacity lives in the grids, which train in minutes like the teacher's hash grid, and the
lookups sit where the surface is instead of spread between near and far. Per frame this
is one MLP pass per pixel and Gathers, no convolutions. Still a light field: the density
only places the points (a running sum along `pixel_samples` samples a pixel), no colour is composited, one
network pass per pixel.

Settings: `student.gridlf` (pipeline/config.py: GridLFConfig); the scene box comes with
the camera (StudentCamera.aabb), the occupancy grid from the teacher (`from_teacher`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.cameras import Intrinsics, camera_directions
from pipeline.config import GridLFConfig

from .kinds import StudentCamera, StudentModel, ray_layout

__all__ = ["GridLightField", "box_interval", "cell_index", "compact", "encode_direction", "encoding_order",
           "exact_matmul", "first_occupied", "first_opaque", "first_opaque_reference", "lookup", "march_first_hit",
           "march_index", "neighbourhood_hits", "pack_density", "pack_surfaces", "plane_tv", "sparse_nearest",
           "sparse_nearest_reference", "surface_bit", "surface_bit_reference", "surface_rows", "trilinear",
           "trilinear_reference", "triplane_bilinear", "triplane_bilinear_reference", "triplane_nearest",
           "triplane_nearest_reference", "window_points"]


def box_interval(origin: Tensor, d: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through the box [lo, hi] (slab test).

    origin, d: (..., 3). Returns t_near, t_far (...); the ray misses when t_far <= t_near.
    Direction components near zero are replaced by a tiny positive number: the slab of such
    an axis then gives (-huge, huge) from inside it and an empty interval from outside.
    """
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (lo - origin) * inv, (hi - origin) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


def cell_index(o: Tensor, v: Tensor, t: Tensor, resolution: int) -> Tensor:
    """Flat index x R^2 + y R + z (float, exact up to 2^24 cells) of the cells of an R^3 grid
    that samples t (..., n) of rays o + t v (..., 3) in cell units fall in (clamped to the grid).
    One coordinate at a time: onnxruntime broadcasts (..., n) by (..., 1) several times faster
    than (..., n, 1) by (..., 1, 3), which made a third of a lego frame's time."""
    r = resolution
    index = torch.zeros_like(t)
    for axis, weight in ((0, r * r), (1, r), (2, 1)):
        index = index + (o[..., axis, None] + t * v[..., axis, None]).floor().clamp(0, r - 1) * weight
    return index


def lookup(table: Tensor, index: Tensor) -> Tensor:
    """table[index] for a 1-D table and an index tensor of any shape (float or integer, exact),
    as one GatherElements over the flattened index: onnxruntime's Gather copies each element
    on its own, 3.4x slower for single floats (a third of the lego pixel march's time)."""
    return torch.gather(table, 0, index.reshape(-1).long()).reshape(index.shape)


def march_first_hit(origin: Tensor, d: Tensor, occupancy: Tensor, resolution: int, lo: Tensor, hi: Tensor,
                    n_samples: int, near: float) -> tuple[Tensor, Tensor]:
    """Where each ray enters the first occupied cell of a grid, and whether it does.

    origin, d: (..., 3); occupancy: (R^3,) float, 0 empty, >= 1 occupied, index x * R^2 + y * R + z over the box
    [lo, hi]. `n_samples` equal steps from box entry (or `near`, if later) to exit, each
    sample at the middle of its step. Returns t (...), the start of the first occupied
    sample's step (the box exit when none), and hit (...) 1.0 / 0.0.
    """
    # in cell units (same t): the per-sample arithmetic is one multiply-add and a floor
    scale = resolution / (hi - lo)
    o, v = (origin - lo) * scale, d * scale
    box = torch.zeros_like(lo)
    t_near, t_far = box_interval(o, v, box, box + resolution)
    t_near = t_near.clamp(min=near)
    span = (t_far - t_near).clamp(min=0.0)  # 0 for rays that miss the box: every sample then sits at t_near
    steps = (torch.arange(n_samples, device=d.device, dtype=d.dtype) + 0.5) / n_samples
    t = t_near[..., None] + steps * span[..., None]  # (..., M)
    index = cell_index(o, v, t, resolution)
    # clamped: a sparse-featured student's grid holds each occupied cell's row number, not 1
    occ = lookup(occupancy, index).clamp(max=1.0) * (span > 0).to(d.dtype)[..., None]  # (..., M)
    first = torch.argmax(occ, dim=-1)  # the first maximum: the first occupied sample
    hit = occ.amax(dim=-1)
    t_hit = t_near + first.to(d.dtype) * span / n_samples
    return torch.where(hit > 0, t_hit, t_near + span), hit


def first_occupied(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, occupancy: Tensor, resolution: int,
                   t_near: Tensor, t_far: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first of n samples at start + (k + 1/2) step, k = 0..n-1, on the teacher's surfaces,
    and the first in a cell of the dilated grid.

    o, v: (..., 3) the ray in cell units (cells of a resolution^3 grid over [0, resolution]^3),
    t along it as in world units; start, step, t_near, t_far: (...); `occupancy` packed
    (`pack_surfaces`). Samples outside (t_near, t_far) count as empty. A sample is on a surface
    when its sub-cell of the grid of twice the resolution is set (`surface_bit`), in a cell when
    the cell's value is above 0. One Gather a sample serves both. Returns t_surface, found,
    t_cell, in_cell (...): the start of the first such sample's step (start + n step when none)
    and whether there is one, 1.0 / 0.0.
    """
    t = start[..., None] + (torch.arange(n, device=v.device, dtype=v.dtype) + 0.5) * step[..., None]  # (..., n)
    p = o[..., None, :] + t[..., None] * v[..., None, :]
    r = resolution
    sub_cell = (p * 2).floor().clamp(0, 2 * r - 1)
    cell = (sub_cell * 0.5).floor()
    value = lookup(occupancy, cell[..., 0] * (r * r) + cell[..., 1] * r + cell[..., 2])
    inside = ((t > t_near[..., None]) & (t < t_far[..., None])).to(v.dtype)
    out = []
    for occ in (surface_bit(value, sub_cell - 2 * cell), value.clamp(max=1.0)):
        occ = occ * inside
        first = torch.argmax(occ, dim=-1)
        found = occ.amax(dim=-1)
        out += [torch.where(found > 0, start + first.to(v.dtype) * step, start + n * step), found]
    return out[0], out[1], out[2], out[3]


def exact_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b in float32 even under autocast (CUDA training runs the student in bf16): the MatMuls
    below stand for exact arithmetic (running sums, products by powers of two), which 8 bits of
    mantissa would break; the graph's are float32 anyway."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.matmul(a.float(), b.float())


def march_index(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, resolution: int) -> Tensor:
    """`cell_index` of n samples at start + (k + 1/2) step, k = 0..n-1: o, v (..., 3) in cell
    units, start, step (...) -> (..., n). Per axis the sample is the ray's point at `start` plus
    k + 1/2 steps, so each axis costs one broadcast multiply-add on (..., n) and no t."""
    r = resolution
    k = torch.arange(n, device=v.device, dtype=v.dtype) + 0.5
    index = None
    for axis, weight in ((0, r * r), (1, r), (2, 1)):
        base, delta = o[..., axis] + start * v[..., axis], step * v[..., axis]
        c = (base[..., None] + k * delta[..., None]).floor().clamp(0, r - 1)
        c = c * weight if weight != 1 else c
        index = c if index is None else index + c
    return index


def first_opaque(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, grid: Tensor, resolution: int,
                 opacity: float, median: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Where n samples at start + (k + 1/2) step, k = 0..n-1, through the teacher's density
    make a ray `opacity` opaque, and the first sample in a cell of the dilated grid.

    o, v: (..., 3) the ray in cell units, t in world units (|v| is cells per world unit along
    unit directions); start, step (...): the samples must lie in the grid's box (callers march
    between the ray's entry and exit); a ray with step 0 (it misses the box) meets nothing.
    `grid` packed (`pack_density`): 0 outside the dilated grid, else 1 + the cell's mean
    density. Each sample stands for its step (nearest cell, midpoint rule). Inside the step
    where the optical depth passes -ln(1 - opacity) the crossing is placed linearly (exact in
    a uniform medium). Returns t_surface, found, t_cell, in_cell (...): start + n step where
    there is none; and the ray's opacity over all n samples, 1 - exp(-optical depth) (...).
    median: the crossing is where the optical depth reaches the smaller of -ln(1 - opacity)
    and half its total, the median of where the ray's light ends: a ray the scene covers in
    part (a silhouette pixel) stops in what it passes, and every ray with any density is found;
    one at least 1 - (1 - opacity)^2 opaque stops where it did. The slow twin:
    `first_opaque_reference`.

    About 20 passes over (..., n), each chosen for onnxruntime (CPU and WASM, a lego frame's
    largest part): one GatherElements a sample, sums of density in cells (the optical depth
    over the step), the running sum as a MatMul with a triangle of ones (CumSum costs 3x as
    much), and the crossing counted, not located: the sums never decrease, so the samples
    before it are those below the threshold, and two GatherElements a ray read its step.
    """
    value = lookup(grid, march_index(o, v, start, step, n, resolution))  # (..., n)
    dens = (value - 1.0).clamp(min=0.0)
    total = exact_matmul(dens, torch.ones(n, n, device=v.device, dtype=v.dtype).triu())  # running sums
    end = total[..., -1:].squeeze(-1)
    safe = step.clamp(min=1e-30)  # step 0: a threshold no sum reaches, the ray is not found
    threshold = -math.log(1.0 - opacity) / safe  # in density sums: optical depth / step
    if median:  # each ray's own threshold
        threshold = torch.minimum(0.5 * end, threshold)
    first = (total < threshold[..., None]).to(v.dtype).sum(dim=-1)  # samples before the crossing
    found = (first < n - 0.5).to(v.dtype)
    if median:  # a ray without density has threshold 0, which every sum reaches: never found
        found = found * (end * step > 1e-6).to(v.dtype)
    at = first.clamp(max=n - 1).long()[..., None]
    own = dens.gather(-1, at).squeeze(-1)  # the crossing sample's density
    before = total.gather(-1, at).squeeze(-1) - own
    frac = ((threshold - before) / own.clamp(min=1e-12)).clamp(0.0, 1.0)
    t_surface = torch.where(found > 0, start + (first + frac) * step, start + n * step)
    covered = value.clamp(max=1.0)
    in_cell = covered.amax(dim=-1) * (step > 0).to(v.dtype)
    t_cell = torch.where(in_cell > 0, start + torch.argmax(covered, dim=-1).to(v.dtype) * step, start + n * step)
    return t_surface, found, t_cell, in_cell, 1.0 - torch.exp(-end * step)


def first_opaque_reference(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, grid: Tensor,
                           resolution: int, opacity: float,
                           median: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`first_opaque` one ray and one sample at a time, with the transmittance itself (the
    test's twin): the crossing is where T = 1 - opacity, inside the step that passes it; with
    `median`, where T = sqrt(T_end) if that is larger (half the optical depth: a second pass)."""
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


def pack_density(occupied: Tensor, density: Tensor, dilate: int) -> Tensor:
    """Two grids in one buffer: (R, R, R) bool occupied cells and their mean density (index
    [x, y, z]) -> (R^3,) float in `march_first_hit`'s layout: 0 outside the occupied cells
    dilated by `dilate` cells, else 1 + the density. The block march reads the dilated grid as
    before (values clamped to 1), `first_opaque` reads both, from the same 8 MB at R = 128."""
    r = occupied.shape[-1]
    if occupied.shape != (r, r, r) or density.shape != occupied.shape:
        raise ValueError(f"occupied cells {tuple(occupied.shape)} and density {tuple(density.shape)}: need two "
                         "(R, R, R) grids")
    return (dilate_cells(occupied, dilate).float() * (1.0 + density.float().clamp(min=0.0))).reshape(-1)


def pack_surfaces(fine: Tensor, dilate: int) -> Tensor:
    """Two grids in one buffer: (2R, 2R, 2R) bool surfaces (index [x, y, z]) -> (R^3,) float in
    `march_first_hit`'s layout. A cell is 0 when it is empty in the coarse grid (a cell is
    occupied when any of its 2x2x2 sub-cells is, then the grid is dilated by `dilate` cells);
    else 1 + the bits of its sub-cells, bit 4 sx + 2 sy + sz for sub-cell (sx, sy, sz). So the
    march reads the dilated coarse grid as before, and a short march reads the fine one, from
    the same 8 MB (at R = 128) and in float32, exact."""
    r2 = fine.shape[-1]
    if fine.shape != (r2, r2, r2) or r2 % 2:
        raise ValueError(f"surfaces of shape {tuple(fine.shape)}: need (2R, 2R, 2R)")
    r = r2 // 2
    f = fine.float().reshape(r, 2, r, 2, r, 2).permute(0, 2, 4, 1, 3, 5).reshape(r, r, r, 8)
    bits = (f * 2.0 ** torch.arange(8, dtype=torch.float32, device=f.device)).sum(dim=-1)
    return (dilate_cells(f.amax(dim=-1), dilate).float() * (1.0 + bits)).reshape(-1)


def surface_bit(value: Tensor, sub: Tensor) -> Tensor:
    """Bit (sx, sy, sz) of packed cells (`pack_surfaces`): value (...), sub (..., 3) of 0 / 1
    -> (...) 1.0 / 0.0. Divisions by powers of two and Floor (no integer ops for the web
    backends); 0 for empty cells. The slow twin is `surface_bit_reference`."""
    power = (1 + 15 * sub[..., 0]) * (1 + 3 * sub[..., 1]) * (1 + sub[..., 2])  # 2^(4 sx + 2 sy + sz)
    q = torch.floor((value - 1).clamp(min=0) / power)
    return q - 2 * torch.floor(q * 0.5)


def surface_bit_reference(value: Tensor, sub: Tensor) -> Tensor:
    """`surface_bit` with integer shifts (the test's twin)."""
    bits = (value - 1).clamp(min=0).long()
    shift = (4 * sub[..., 0] + 2 * sub[..., 1] + sub[..., 2]).long()
    return ((bits >> shift) & 1).to(value.dtype)


def window_points(origin: Tensor, d: Tensor, t0: Tensor, step: Tensor, k: int, lo: Tensor, size: Tensor) -> Tensor:
    """The k points t0 + (j + 1/2) step, j < k, of rays origin + t d (..., 3), t0, step (...), in
    the box [lo, lo + size] mapped to [0, 1]^3 -> (..., k, 3). Per axis on (...) vectors, then
    one MatMul spreads them over the points: onnxruntime pays per broadcast row, and the plain
    (..., k, 1) x (..., 1, 3) form took 2.5 ms of a lego frame, this 0.3."""
    cols, deltas = [], []
    for i in range(3):
        a, b = (origin[..., i] - lo[i]) / size[i], d[..., i] / size[i]
        cols.append(a + t0 * b)
        deltas.append(step * b)
    eye = torch.eye(3, device=d.device, dtype=d.dtype)
    u = torch.arange(k, device=d.device, dtype=d.dtype) + 0.5
    spread = torch.cat([eye.repeat(1, k), torch.kron(u[None], eye)])  # (6, 3k): column 3j + i is point j, axis i
    return exact_matmul(torch.stack(cols + deltas, dim=-1), spread).reshape(*t0.shape, k, 3)


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


def neighbourhood_hits(t: Tensor, hit: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The nearest and farthest hit among each march ray's 3x3 neighbours and itself:
    t, hit (B, m, m) -> near, far, any (B, m, m); where none hits (any 0), near is huge and far
    very negative (finite: the web backends and the graph's arithmetic stay clean). MaxPools."""
    big = 1e4
    flag = hit[:, None] > 0
    near = -F.max_pool2d(torch.where(flag, -t[:, None], -big), kernel_size=3, stride=1, padding=1)
    far = F.max_pool2d(torch.where(flag, t[:, None], -big), kernel_size=3, stride=1, padding=1)
    any_hit = F.max_pool2d(hit[:, None], kernel_size=3, stride=1, padding=1)
    return near[:, 0], far[:, 0], any_hit[:, 0]


def compact(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows where a flat 0/1 mask (N,) is set, and the way back: idx (M + 1,), the set rows then
    row 0 once more (never empty: an empty list broke onnxruntime's Reshape and is risky in the
    web backends), and place (N,), each set row's position in idx, M + 1 for the others (one row
    past idx: the caller appends the value of the rest). NonZero, Gathers and a CumSum in the
    graph, so a frame costs its selected rows only."""
    idx = torch.cat([torch.nonzero(mask > 0)[:, 0], torch.zeros_like(mask[:1], dtype=torch.long)])
    place = torch.where(mask > 0, torch.cumsum(mask, dim=0) - 1.0, mask.sum() + 1.0)  # M as a tensor: stays dynamic
    return idx, place.long()


def trilinear(grid: Tensor, resolution: int, x: Tensor) -> Tensor:
    """Trilinear interpolation of a dense grid, with one Gather of the 8 corners.

    grid: (R^3, C), index x * R^2 + y * R + z, its values at the corners of R - 1 cells over
    [0, 1]^3 (align_corners); x: (..., 3), clamped to [0, 1]. Returns (..., C). The slow
    twin is `trilinear_reference` (torch's grid_sample).
    """
    r = resolution
    u = x.clamp(0.0, 1.0) * (r - 1)
    i0 = u.floor().clamp(max=r - 2)  # the cell's lower corner; x = 1 lands in the last cell at f = 1
    f = u - i0
    strides = torch.tensor([r * r, r, 1], device=x.device, dtype=x.dtype)
    base = (i0 * strides).sum(dim=-1)  # (...)
    corners = torch.tensor([[dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                           device=x.device, dtype=x.dtype)  # (8, 3)
    index = (base[..., None] + corners @ strides).long()  # (..., 8)
    vals = grid[index]  # (..., 8, C)
    # weight of corner (dx, dy, dz): prod over axes of f (offset 1) or 1 - f (offset 0)
    w = (corners * f[..., None, :] + (1 - corners) * (1 - f[..., None, :])).prod(dim=-1)  # (..., 8)
    return (vals * w[..., None]).sum(dim=-2)


def triplane_nearest(planes: Tensor, resolutions: list[int], x: Tensor, combine: str = "concat") -> Tensor:
    """Features of the xy, xz and yz planes of every resolution at the cell each point
    projects to (no interpolation).

    planes: (sum over r of 3 r^2, C): for each resolution r in order, plane xy then xz then
    yz, each r x r row-major (first coordinate major), r cells over [0, 1]; x: (..., 3),
    clamped to [0, 1]. Returns (..., L * 3 * C), resolution-major; with combine "product",
    (..., L * C), each resolution's three features multiplied elementwise. One Gather and a few
    elementwise ops a point: in onnxruntime's CPU and WASM backends interpolation's corners
    and weights cost ~50x the lookup, and a matmul with 3 columns or a concat of features
    costs as much as the network.
    """
    x = x.clamp(0.0, 1.0)
    index, offset = [], 0
    for r in resolutions:
        c = (x * r).floor().clamp(max=r - 1)
        cx, cy, cz = c[..., 0], c[..., 1], c[..., 2]
        index += [cx * r + cy + offset, cx * r + cz + (offset + r * r), cy * r + cz + (offset + 2 * r * r)]
        offset += 3 * r * r
    feats = planes[torch.stack(index, dim=-1).long()]  # (..., L * 3, C)
    return _combine(feats, combine).flatten(-2)


def _combine(feats: Tensor, combine: str) -> Tensor:
    """(..., L * 3, C) plane features -> themselves, or ("product") (..., L, C), each resolution's
    three multiplied. Strided slices and Muls: no ReduceProd for the web backends to support."""
    if combine != "product":
        return feats
    return feats[..., 0::3, :] * feats[..., 1::3, :] * feats[..., 2::3, :]


def triplane_bilinear(planes: Tensor, resolutions: list[int], x: Tensor, combine: str = "concat") -> Tensor:
    """`triplane_nearest` with each plane read bilinearly between its four nearest cell centres
    (values at the centres of r cells over [0, 1], clamped at the border, like grid_sample with
    align_corners=False and padding_mode="border"). One Gather of 4 rows a plane: the corners'
    indices are the first corner's plus constants, and the weights are elementwise products.
    The slow twin is `triplane_bilinear_reference`."""
    x = x.clamp(0.0, 1.0)
    base, fa, fb, offs, offset = [], [], [], [], 0
    for r in resolutions:
        u = x * r - 0.5
        i0 = u.floor().clamp(0, r - 2)
        f = (u - i0).clamp(0.0, 1.0)
        for a, b, plane in ((0, 1, 0), (0, 2, 1), (1, 2, 2)):
            base.append(i0[..., a] * r + i0[..., b] + (offset + plane * r * r))
            fa.append(f[..., a])
            fb.append(f[..., b])
            offs.append([0.0, 1.0, float(r), float(r + 1)])  # (a, b), (a, b + 1), (a + 1, b), (a + 1, b + 1)
        offset += 3 * r * r
    index = torch.stack(base, dim=-1)[..., None] + torch.tensor(offs, device=x.device, dtype=x.dtype)  # (..., P, 4)
    wa, wb = torch.stack(fa, dim=-1), torch.stack(fb, dim=-1)  # (..., P)
    w = torch.stack([(1 - wa) * (1 - wb), (1 - wa) * wb, wa * (1 - wb), wa * wb], dim=-1)  # (..., P, 4)
    feats = (planes[index.long()] * w[..., None]).sum(dim=-2)  # (..., P, C)
    return _combine(feats, combine).flatten(-2)


def triplane_bilinear_reference(planes: Tensor, resolutions: list[int], x: Tensor,
                                combine: str = "concat") -> Tensor:
    """`triplane_bilinear` through torch's grid_sample, plane by plane (the test's twin)."""
    out, offset = [], 0
    pts = x.reshape(-1, 3).clamp(0.0, 1.0) * 2 - 1
    for r in resolutions:
        three = []
        for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
            plane = planes[offset + k * r * r:offset + (k + 1) * r * r].reshape(r, r, -1).permute(2, 0, 1)[None]
            g = torch.stack([pts[:, b], pts[:, a]], dim=-1).reshape(1, -1, 1, 2)  # grid_sample: (W, H) = (b, a)
            v = F.grid_sample(plane, g, mode="bilinear", padding_mode="border", align_corners=False)
            three.append(v[0, :, :, 0].T.reshape(*x.shape[:-1], -1))
        out += [three[0] * three[1] * three[2]] if combine == "product" else three
        offset += 3 * r * r
    return torch.cat(out, dim=-1)


def triplane_nearest_reference(planes: Tensor, resolutions: list[int], x: Tensor, combine: str = "concat") -> Tensor:
    """`triplane_nearest` with explicit per-plane indexing (the test's twin)."""
    out, offset = [], 0
    for r in resolutions:
        c = (x.clamp(0.0, 1.0) * r).floor().long().clamp(max=r - 1)
        xy, xz, yz = planes[offset:offset + 3 * r * r].reshape(3, r, r, -1)
        three = [xy[c[..., 0], c[..., 1]], xz[c[..., 0], c[..., 2]], yz[c[..., 1], c[..., 2]]]
        out += [three[0] * three[1] * three[2]] if combine == "product" else three
        offset += 3 * r * r
    return torch.cat(out, dim=-1)


def surface_rows(occupied: Tensor) -> Tensor:
    """(R^3,) 0/1 -> the row table of `sparse_nearest`: 0 for empty cells, i for the i-th
    occupied cell in flat order (1-based; exact in float32 up to 2^24 cells)."""
    occ = (occupied > 0).to(torch.float32)
    return torch.cumsum(occ, dim=0) * occ


def sparse_nearest(table: Tensor, rows: Tensor, resolution: int, subdivide: int, x: Tensor) -> Tensor:
    """Features at the nearest sub-cell of a grid that stores features only in occupied cells.

    rows: (R^3,) float (`surface_rows`): each cell's row, 0 for every empty cell; table:
    ((N + 1) * S^3, C): row n's S^3 sub-cells (x major), row 0 shared by all empty cells;
    x: (..., 3), clamped to [0, 1]. Returns (..., C). Two Gathers and elementwise ops (no
    3-column matmul: slow in onnxruntime). The slow twin is `sparse_nearest_reference`.
    """
    r, s = resolution, subdivide
    f = (x.clamp(0.0, 1.0) * (r * s)).floor().clamp(max=r * s - 1)  # sub-cell over the whole grid
    c = (f / s).floor()  # its cell (exact: f is a small integer)
    sub = f - c * s
    row = rows[(c[..., 0] * (r * r) + c[..., 1] * r + c[..., 2]).long()]
    return table[(row * s ** 3 + sub[..., 0] * (s * s) + sub[..., 1] * s + sub[..., 2]).long()]


def sparse_nearest_reference(table: Tensor, rows: Tensor, resolution: int, subdivide: int, x: Tensor) -> Tensor:
    """`sparse_nearest` with integer arithmetic and one point at a time (the test's twin)."""
    r, s = resolution, subdivide
    grid = rows.long().reshape(r, r, r)
    out = []
    for p in x.reshape(-1, 3).clamp(0.0, 1.0).tolist():
        i, j, k = (min(int(v * r * s), r * s - 1) for v in p)
        n = int(grid[i // s, j // s, k // s])
        out.append(table[n * s ** 3 + (i % s) * s * s + (j % s) * s + k % s])
    return torch.stack(out).reshape(*x.shape[:-1], table.shape[-1])


def plane_tv(planes: Tensor, resolutions: list[int]) -> Tensor:
    """Total variation of tri-planes in `triplane_nearest`'s layout: the mean over resolutions of
    the mean squared difference between neighbouring cells, along both axes of every plane."""
    out, offset = [], 0
    for r in resolutions:
        p = planes[offset:offset + 3 * r * r].reshape(3, r, r, -1)
        out.append(0.5 * ((p[:, 1:] - p[:, :-1]).square().mean() + (p[:, :, 1:] - p[:, :, :-1]).square().mean()))
        offset += 3 * r * r
    return torch.stack(out).mean()


def trilinear_reference(grid: Tensor, resolution: int, x: Tensor) -> Tensor:
    """`trilinear` through torch's grid_sample (the test's twin)."""
    r, c = resolution, grid.shape[-1]
    vol = grid.reshape(r, r, r, c).permute(3, 0, 1, 2)[None]  # (1, C, D=x, H=y, W=z)
    g = (x.clamp(0.0, 1.0) * 2 - 1).flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (W, H, D) = (z, y, x)
    out = F.grid_sample(vol, g, mode="bilinear", align_corners=True)  # (1, C, n, 1, 1)
    return out[0, :, :, 0, 0].T.reshape(*x.shape[:-1], c)


class GridLightField(StudentModel):
    """pose -> per-pixel rays -> occupancy march -> K anchored points -> feature grids -> MLP."""

    kind = "gridlf"
    arch_type = GridLFConfig
    needs_occupancy = True

    def __init__(self, arch: GridLFConfig, camera: StudentCamera):
        super().__init__(arch, camera)
        if camera.aabb is None:
            raise ValueError("a gridlf student needs the scene box (StudentCamera.aabb)")
        size, stride = camera.output_size, arch.march_stride
        if size % stride:
            raise ValueError(f"output_size {size} is not a multiple of march_stride {stride}")
        self.in_size = size  # one ray per pixel
        f = camera.focal
        dirs = camera_directions(Intrinsics(f, f, 0.5 * size, 0.5 * size, size, size)).reshape(-1, 3)
        self.register_buffer("dirs", dirs / dirs.norm(dim=-1, keepdim=True), persistent=False)
        m = size // stride  # the march's rays: one at the centre of each stride x stride block
        march = camera_directions(Intrinsics(f / stride, f / stride, 0.5 * m, 0.5 * m, m, m)).reshape(-1, 3)
        self.register_buffer("march_dirs", march / march.norm(dim=-1, keepdim=True), persistent=False)
        lo, hi = torch.tensor(camera.aabb[:3]), torch.tensor(camera.aabb[3:])
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("hi", hi, persistent=False)
        r = arch.occupancy_resolution
        self.register_buffer("occupancy", torch.ones(r ** 3))  # from_teacher fills it; all-occupied until then
        # surface: density marches the box of the dilated cells only (cell units: lo, hi), set by
        # from_teacher: lego's fills under half the teacher's box on each axis
        self.register_buffer("march_box", torch.tensor([0.0, 0.0, 0.0, r, r, r]))
        self._set_march_samples()
        # what the feature planes or grids span (world units: lo, hi); grid_extent: occupied narrows
        # it to the teacher's occupied cells in from_teacher
        self.register_buffer("grid_box", torch.cat([lo, hi]))
        self.cell = float((hi - lo).mean()) / r  # world units per occupancy cell
        if arch.features == "sparse":
            # sub-cells of the occupied cells only; empty until from_teacher says which cells are
            # occupied (the occupancy buffer then holds each cell's row: surface_rows)
            self.grids = nn.ParameterList([nn.Parameter(self._table(0, torch.device("cpu")))])
            n_in = arch.n_points * arch.grid_channels
        else:
            rows = (lambda g: g ** 3) if arch.features == "grid" else (lambda g: 3 * g * g)
            product = arch.features == "triplane" and arch.plane_combine == "product"
            # a product of small numbers has vanishing gradients: K-Planes starts its planes in [0.1, 0.5]
            lo, hi = (0.1, 0.5) if product else (-1e-4, 1e-4)
            self.grids = nn.ParameterList([nn.Parameter(torch.empty(rows(g), arch.grid_channels).uniform_(lo, hi))
                                           for g in arch.grid_resolutions])
            per_point = 1 if product or arch.features == "grid" else 3  # features a point's lookups give, per C
            n_in = arch.n_points * len(arch.grid_resolutions) * arch.grid_channels * per_point
        # the first layer is split (features, direction): two matmuls and an add instead of
        # concatenating 200-odd floats a pixel, which cost onnxruntime as much as the matmul
        self.feat_in = nn.Linear(n_in, arch.width)
        self.dir_in = nn.Linear(3 * (1 + 2 * arch.dir_freqs), arch.width, bias=False)
        if arch.ray_opacity:  # a third term of the first layer, from the pixel's opacity
            self.opacity_in = nn.Linear(1, arch.width, bias=False)
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(arch.depth - 1):
            layers += [nn.Linear(arch.width, arch.width), nn.ReLU()]
        layers.append(nn.Linear(arch.width, 4 if arch.blend == "alpha" else 3))  # blend: alpha adds coverage
        self.mlp = nn.Sequential(*layers)
        self.background = nn.Parameter(torch.zeros(3))  # logits of the colour of rays that hit nothing

    # features: sparse keeps its table under this many floats (1 GiB of float32)
    MAX_TABLE_FLOATS = 2 ** 28

    def _table(self, n_cells: int, device: torch.device) -> Tensor:
        """A fresh sparse feature table for n_cells occupied cells (row 0: the empty cells)."""
        a = self.arch
        size = (n_cells + 1) * a.subdivide ** 3
        if size * a.grid_channels > self.MAX_TABLE_FLOATS:
            raise ValueError(f"{n_cells:,} occupied cells x {a.subdivide}^3 sub-cells x {a.grid_channels} channels "
                             f"exceed {self.MAX_TABLE_FLOATS:,} floats: lower student.gridlf.subdivide, "
                             "grid_channels or occupancy_resolution")
        return torch.empty(size, a.grid_channels, device=device).uniform_(-1e-4, 1e-4)

    def _set_march_samples(self) -> None:
        """One sample per cell along the longest ray through the marched box (the block march)."""
        extent = self.march_box[3:] - self.march_box[:3]
        self.n_march = max(1, int(math.ceil(float(extent.norm()))))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a sparse table's size follows the teacher's surfaces: take the saved one's
        key = prefix + "grids.0"
        if self.arch.features == "sparse" and key in state_dict and state_dict[key].shape != self.grids[0].shape:
            self.grids[0] = nn.Parameter(torch.empty_like(state_dict[key], device=self.grids[0].device))
        # students saved before the marched box existed marched the whole box
        state_dict.setdefault(prefix + "march_box", self.march_box.new_tensor([0.0, 0.0, 0.0] + [
            float(self.arch.occupancy_resolution)] * 3))
        # and their features spanned the scene box
        state_dict.setdefault(prefix + "grid_box", torch.cat([self.lo, self.hi]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_march_samples()

    # --- scene knowledge -------------------------------------------------------------
    def from_teacher(self, occupancy: Tensor, density: Tensor | None = None) -> None:
        """Take the teacher's occupancy grid, (R0, R0, R0) bool over the same box: max-pooled
        to `occupancy_resolution` (a divisor of R0; the student stage computes it at exactly
        that resolution, teacher/occupancy.py) and dilated by `dilate` cells. surface: density
        also takes the mean density per cell (R0, R0, R0), average-pooled."""
        r0, r = occupancy.shape[-1], self.arch.occupancy_resolution
        if self.arch.surface == "pixel":
            r = 2 * r  # the fine surfaces: pooled to twice the resolution, then packed (pack_surfaces)
        if occupancy.shape != (r0, r0, r0) or r0 % r:
            raise ValueError(f"the teacher's occupancy grid {tuple(occupancy.shape)} cannot be pooled to {r}^3 "
                             f"(student.gridlf.occupancy_resolution{' x 2' * (r != self.arch.occupancy_resolution)} "
                             f"must divide {r0})")
        if self.arch.grid_extent == "occupied":
            self.grid_box.copy_(self._occupied_box(occupancy))
        if self.arch.surface == "density":
            if density is None or density.shape != occupancy.shape:
                raise ValueError("student.gridlf.surface: density needs the teacher's density grid beside its "
                                 f"occupancy grid {tuple(occupancy.shape)}")
            occ = F.max_pool3d(occupancy.float()[None, None], kernel_size=r0 // r)[0, 0] > 0
            mean = F.avg_pool3d(density.float()[None, None], kernel_size=r0 // r)[0, 0]
            self.occupancy.copy_(pack_density(occ, mean, self.arch.dilate).to(self.occupancy.device))
            box = cell_box(self.occupancy.reshape(r, r, r) > 0)
            if box is not None:
                self.march_box.copy_(box)
                self._set_march_samples()
            return
        occ = F.max_pool3d(occupancy.float()[None, None], kernel_size=r0 // r)
        if self.arch.surface == "pixel":
            self.occupancy.copy_(pack_surfaces(occ[0, 0] > 0, self.arch.dilate).to(self.occupancy.device))
            return
        occ = dilate_cells(occ[0, 0], self.arch.dilate).float().reshape(-1).to(self.occupancy.device)
        if self.arch.features == "sparse":
            occ = surface_rows(occ)
            self.grids[0] = nn.Parameter(self._table(int(occ.max()), self.occupancy.device))
        self.occupancy.copy_(occ)

    def _occupied_box(self, occupancy: Tensor) -> Tensor:
        """World-unit box (6,) of the teacher's occupied cells at `occupancy_resolution`, dilated
        as the march's; the scene box when nothing is occupied."""
        r = self.arch.occupancy_resolution
        occ = F.max_pool3d(occupancy.float()[None, None], kernel_size=occupancy.shape[-1] // r)[0, 0]
        box = cell_box(dilate_cells(occ, self.arch.dilate))
        if box is None:
            return torch.cat([self.lo, self.hi])
        return self.lo.repeat(2) + box.to(self.lo) * ((self.hi - self.lo) / r).repeat(2)

    # --- the interface ---------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return self.arch.n_points

    @property
    def per_ray(self) -> bool:
        return True  # a pixel depends on its own ray and its block's march ray only

    def param_groups(self, lr: float) -> list[dict]:
        """The grids learn `grid_lr_scale` times faster (Adam's eps small: their gradients are sparse)."""
        grids = list(self.grids.parameters())
        ids = {id(p) for p in grids}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr},
                {"params": grids, "lr": lr * self.arch.grid_lr_scale, "eps": 1e-15, "weight_decay": 0.0}]

    def regularization(self) -> Tensor | None:
        a = self.arch
        if a.features != "triplane" or not a.tv_weight:
            return None
        return a.tv_weight * sum(plane_tv(g, [r]) for g, r in zip(self.grids, a.grid_resolutions, strict=True))

    def anchor(self, origin: Tensor, d_march: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Where the K points of a march ray's pixels go: start t0, window length, and hit
        (1.0 / 0.0), each (...). `anchor: false` (the ablation without the teacher's
        surfaces): from the ray's box entry to its exit."""
        if not self.arch.anchor:
            t_near, t_far = box_interval(origin, d_march, self.lo, self.hi)
            t_near = t_near.clamp(min=self.camera.near)
            return t_near, (t_far - t_near).clamp(min=0.0), (t_far > t_near).to(d_march.dtype)
        if self.arch.surface == "density":
            return self._density_anchor(origin, d_march)
        length = self.arch.window * self.cell
        t0, hit = march_first_hit(origin, d_march, self.occupancy, self.arch.occupancy_resolution, self.lo, self.hi,
                                  self.n_march, self.camera.near)
        return t0, torch.full_like(t0, length), hit

    def _density_anchor(self, origin: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """surface: density, the block march: where each march ray turns opaque (else its first
        dilated cell; a haze the teacher marked occupied does not hide the surface behind it from
        the pixels' marches). Only the rays that meet the box of the dilated cells march it (one
        sample a cell; compacted as shading is: most rays of a view miss it)."""
        lead = d.shape[:-1]
        o, v, _, _ = self._in_cells(origin, d)
        box = self.march_box
        t_near, t_far = box_interval(o, v, box[:3], box[3:])
        t_near = t_near.clamp(min=self.camera.near)
        idx, place = compact((t_far > t_near).to(d.dtype).reshape(-1))
        o, v = o.expand_as(v).reshape(-1, 3)[idx], v.reshape(-1, 3)[idx]
        t_near, t_far = t_near.reshape(-1)[idx], t_far.reshape(-1)[idx]
        n = self.n_march
        step = (t_far - t_near).clamp(min=0.0) / n
        t_surf, found, t_cell, hit, _ = first_opaque(o, v, t_near, step, n, self.occupancy,
                                                     self.arch.occupancy_resolution, self.arch.surface_opacity)
        t0 = torch.where(found > 0, t_surf, torch.where(hit > 0, t_cell, t_near + n * step))
        t0 = torch.cat([t0, torch.zeros_like(t0[:1])])[place].reshape(lead)  # the rest: no hit
        hit = torch.cat([hit, torch.zeros_like(hit[:1])])[place].reshape(lead)
        return t0, torch.full_like(t0, self.arch.window * self.cell), hit

    def _in_cells(self, origin: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A ray in cell units of the occupancy grid (t stays world units): o, v (..., 3), and
        where it enters and leaves the box, t_near, t_far (...)."""
        r = self.arch.occupancy_resolution
        scale = r / (self.hi - self.lo)
        o, v = (origin - self.lo) * scale, d * scale
        box = torch.zeros_like(self.lo)
        t_near, t_far = box_interval(o, v, box, box + r)
        return o, v, t_near, t_far

    @property
    def surface_resolution(self) -> int:
        """Cells per side of the grid the stage computes the teacher's surfaces at (`from_teacher`)."""
        return self.arch.occupancy_resolution * (2 if self.arch.surface == "pixel" else 1)

    @property
    def surface_samples(self) -> int:
        """Random points per cell the stage reads the teacher's density at: surface: density
        averages them (16 keep the mean within a few percent where the density varies)."""
        return 16 if self.arch.surface == "density" else 4

    @property
    def _own_surface(self) -> bool:
        """Each pixel marches its own ray (surface: pixel or density)."""
        return self.arch.anchor and self.arch.surface != "block"

    def pixel_anchor(self, origin: Tensor, d: Tensor, near: Tensor, far: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """surface: pixel or density. Each pixel's own surface, between the nearest and farthest hit of its
        neighbourhood's march rays (`neighbourhood_hits`): origin, d (..., 3), near, far (...)
        -> t0 (the window's start, centred on the surface), hit and opacity (...).

        A march of `pixel_samples` samples over [near - 1 cell, far + 3 cells] finds the first
        sample on a surface, and whether any sample is in a cell of the dilated grid: the pixel
        covers the scene if one is (generous, as the block march: a pixel of the scene painted
        background costs far more than a background pixel the network learns to paint). Then
        `fine_samples` steps through that sample's step place the surface to a fraction of it.
        A pixel that covers the scene but meets no surface sample (it passes thin parts by)
        centres its window a cell past its first dilated cell. surface: density: the same march
        through the teacher's mean density (`first_opaque`) places the surface where the ray
        becomes `surface_opacity` opaque, and its opacity over the whole march says how much of
        the pixel the scene covers (surface: pixel: hit).
        """
        a = self.arch
        r, cell = a.occupancy_resolution, self.cell
        o, v, t_near, t_far = self._in_cells(origin, d)
        t_near = t_near.clamp(min=self.camera.near)
        start = torch.maximum(near - cell, t_near)
        span = (torch.minimum(far + 3 * cell, t_far) - start).clamp(min=0.0)
        step = span / a.pixel_samples
        if a.surface == "density":  # the surface is where the ray turns opaque: no half step to add
            t_surf, on_surface, t_cell, covered, opacity = first_opaque(o, v, start, step, a.pixel_samples,
                                                                        self.occupancy, r, a.surface_opacity,
                                                                        median=a.faint_surface == "median")
            centre = torch.where(on_surface > 0, t_surf, t_cell + 0.5 * step + cell)
            return centre - 0.5 * a.window * cell, covered, opacity  # opacity > 0 only in covered cells
        t_surf, on_surface, t_cell, covered = first_occupied(o, v, start, step, a.pixel_samples, self.occupancy, r,
                                                             t_near, t_far)
        centre = t_surf + 0.5 * step
        if a.fine_samples:
            fine_step = step / a.fine_samples
            t_fine, found_fine, _, _ = first_occupied(o, v, t_surf - 0.5 * step, fine_step, a.fine_samples,
                                                      self.occupancy, r, t_near, t_far)
            centre = torch.where(found_fine > 0, t_fine + 0.5 * fine_step, centre)
        centre = torch.where(on_surface > 0, centre, t_cell + 0.5 * step + cell)
        return centre - 0.5 * a.window * cell, covered, covered

    def anchors_frame(self, pose: Tensor, d: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where every pixel's K points go: pose (B, 4, 4) -> t0, length, hit, and the pixel's
        opacity (`pixel_anchor`; without a march of its own: hit), each (B, S^2). d: the pixels'
        world directions (B, S^2, 3), when the caller has them."""
        b, s, st = pose.shape[0], self.camera.output_size, self.arch.march_stride
        m = s // st
        rot, origin = pose[:, :3, :3], pose[:, None, :3, 3]  # origin (B, 1, 3)
        t0, length, hit = self.anchor(origin, torch.matmul(self.march_dirs, rot.transpose(1, 2)))  # each (B, m^2)

        def blocks(v: Tensor) -> Tensor:  # each march ray's value for every pixel of its stride x stride block
            return v.reshape(b, m, 1, m, 1).expand(b, m, st, m, st).reshape(b, s * s)

        if d is None:
            d = torch.matmul(self.dirs, rot.transpose(1, 2))
        if self._own_surface:
            near, far, near_any = (blocks(v).reshape(-1) for v in neighbourhood_hits(t0.reshape(b, m, m),
                                                                                       hit.reshape(b, m, m)))
            # only pixels with a hit around them march: in an object-centred view most have none
            idx, place = compact(near_any)
            rows = self.pixel_anchor(origin.expand(b, s * s, 3).reshape(-1, 3)[idx], d.reshape(-1, 3)[idx],
                                     near[idx], far[idx])
            t0, hit, opacity = (torch.cat([v, torch.zeros_like(v[:1])])[place].reshape(b, s * s) for v in rows)
            return t0, torch.full_like(t0, self.arch.window * self.cell), hit, opacity
        t0, length, hit = blocks(t0), blocks(length), blocks(hit)
        if self.arch.anchor and self.arch.refine:
            t0, hit = self.refine(origin, d, t0, hit)
        return t0, length, hit, hit

    @property
    def ray_inputs_required(self) -> bool:
        return self._own_surface  # its anchors need the neighbourhood

    @property
    def ray_input_columns(self) -> int:
        return 4 if self.arch.ray_opacity else 3

    def ray_inputs(self, pose: Tensor) -> Tensor:
        """Each pixel's anchor (t0, length, hit, and with `ray_opacity` its opacity) of views
        pose (B, 4, 4) -> (B, S^2, `ray_input_columns`): computed once per training view, a
        training step then reads its rays' rows instead of marching."""
        return torch.stack(self.anchors_frame(pose)[:self.ray_input_columns], dim=-1)

    def refine(self, origin: Tensor, d: Tensor, t0: Tensor, hit: Tensor) -> tuple[Tensor, Tensor]:
        """Each pixel's own first occupied cell within `refine` cells of its block's anchor t0:
        origin, d (..., 3), t0, hit (...) -> t, hit. The block's march ray may hit a thin part
        in front of what the pixel sees (the pixel then finds the surface behind it) or a
        surface the pixel passes beside (the pixel finds nothing: background)."""
        r, n = self.arch.occupancy_resolution, self.arch.refine
        o, v, _, t_far = self._in_cells(origin, d)
        t = t0[..., None] + (torch.arange(n, device=d.device, dtype=d.dtype) + 0.5) * self.cell  # (..., n)
        occ = lookup(self.occupancy, cell_index(o, v, t, r)).clamp(max=1.0) * (t < t_far[..., None]).to(d.dtype)
        first = torch.argmax(occ, dim=-1)
        return t0 + first.to(d.dtype) * self.cell, hit * occ.amax(dim=-1)

    def shade(self, origin: Tensor, d: Tensor, t0: Tensor, length: Tensor, hit: Tensor, opacity: Tensor,
              noise: Tensor | None = None) -> Tensor:
        """Colour of rays (origin, d (..., 3)) whose points span [t0, t0 + length] (...) -> (..., 3).
        opacity (...): the pixel's (`anchors_frame`), an input of the MLP with `ray_opacity`.

        noise: optional (..., K) in [0, 1): each point's place within its share of the window
        (training, unless `jitter: false`); None: the middle of it.
        """
        k, a = self.arch.n_points, self.arch
        lo, hi = self.grid_box[:3], self.grid_box[3:]
        size = hi - lo
        if noise is not None and a.jitter:
            t = t0[..., None] + (torch.arange(k, device=d.device, dtype=d.dtype) + noise) * (length / k)[..., None]
            x = ((origin - lo) / size)[..., None, :] + t[..., None] * (d / size)[..., None, :]  # grid box -> [0, 1]^3
        else:  # the middle of each share of the window (every frame in the viewer)
            x = window_points(origin, d, t0, length / k, k, lo, size)
        if a.features == "sparse":
            h = sparse_nearest(self.grids[0], self.occupancy, a.occupancy_resolution, a.subdivide, x).flatten(-2)
        elif a.features == "grid":
            pairs = zip(self.grids, a.grid_resolutions, strict=True)
            feats = [trilinear(g, r, x) for g, r in pairs]  # each (..., K, C)
            h = torch.cat(feats, dim=-1).flatten(-2)  # (..., K * L * C)
        else:
            table = self.grids[0] if len(self.grids) == 1 else torch.cat(list(self.grids))  # folded at export
            read = triplane_bilinear if a.plane_interp == "bilinear" else triplane_nearest
            h = read(table, a.grid_resolutions, x, a.plane_combine).flatten(-2)  # (..., K * L * 3 * C)
        # the direction's and the opacity's terms of the first layer as one MatMul (the weights are
        # reordered and joined once, at export)
        enc, weight = encode_direction(d, a.dir_freqs), self.dir_in.weight[:, encoding_order(a.dir_freqs)]
        if a.ray_opacity:
            enc = torch.cat([enc, opacity[..., None].to(enc.dtype)], dim=-1)
            weight = torch.cat([weight, self.opacity_in.weight], dim=1)
        h = self.feat_in(h) + torch.matmul(enc, weight.t())
        out = self.mlp(h)
        rgb = torch.sigmoid(out[..., :3])
        w = hit[..., None]
        if a.blend == "alpha":  # the pixel's coverage: a product the MLP need not learn to form itself
            w = w * torch.sigmoid(out[..., 3:])
        return w * rgb + (1 - w) * torch.sigmoid(self.background)

    def forward(self, pose: Tensor, jitter: bool | Tensor = False, ray: Tensor | None = None,
                cached: Tensor | None = None) -> Tensor:
        if ray is not None:
            return self.forward_rays(pose, ray, jitter if isinstance(jitter, Tensor) else None, cached)
        if pose.dim() == 2:
            pose = pose[None]
        b, s = pose.shape[0], self.camera.output_size
        d = torch.matmul(self.dirs, pose[:, :3, :3].transpose(1, 2))  # (B, S^2, 3)
        t0, length, hit, opacity = self.anchors_frame(pose, d)
        noise = None
        if isinstance(jitter, Tensor):
            noise = jitter
        elif jitter:
            noise = torch.rand(b, s * s, self.arch.n_points, device=pose.device)
        origin = pose[:, None, :3, 3].expand(b, s * s, 3)
        rgb = self.shade_hits(origin, d, t0, length, hit, opacity, noise)  # (B, S^2, 3)
        return rgb.transpose(1, 2).reshape(b, 3, s, s)

    def shade_hits(self, origin: Tensor, d: Tensor, t0: Tensor, length: Tensor, hit: Tensor, opacity: Tensor,
                   noise: Tensor | None = None) -> Tensor:
        """`shade` of the rays that hit only; the others are the background colour. Equal to
        `shade` (test): a frame costs its covered pixels, not all of them (NonZero, Gathers and a
        CumSum in the graph: the background is most of a typical object-centred view)."""
        lead = hit.shape
        idx, place = compact(hit.reshape(-1))
        rows = [v.reshape(-1, v.shape[-1])[idx] for v in (origin, d)]
        nz = None if noise is None else noise.reshape(-1, noise.shape[-1])[idx]
        rgb = self.shade(*rows, t0.reshape(-1)[idx], length.reshape(-1)[idx], torch.ones_like(idx, dtype=d.dtype),
                         opacity.reshape(-1)[idx], nz)  # (N + 1, 3)
        table = torch.cat([rgb, torch.sigmoid(self.background)[None].to(rgb.dtype)])  # the rest: background
        return table[place].reshape(*lead, 3)

    def forward_rays(self, pose: Tensor, ray: Tensor, noise: Tensor | None = None,
                     cached: Tensor | None = None) -> Tensor:
        """cached: (N, C) the rays' rows of `ray_inputs` (training); None: computed here."""
        rot, origin = pose[:, :3, :3], pose[:, :3, 3]
        d = torch.matmul(rot, self.dirs[ray][:, :, None])[:, :, 0]
        if cached is None:
            cached = self._anchors_of_rays(pose, ray)
        t0, length, hit = cached[:, 0], cached[:, 1], cached[:, 2]
        opacity = cached[:, 3] if self.arch.ray_opacity else hit
        rgb = self.shade(origin, d, t0, length, hit, opacity, noise)  # (N, 3)
        b, h, w = ray_layout(len(ray), self.in_size)
        return rgb.reshape(b, h * w, 3).transpose(1, 2).reshape(b, 3, h, w)

    def _anchors_of_rays(self, pose: Tensor, ray: Tensor) -> Tensor:
        """`ray_inputs` rows of arbitrary rays: (N, 4, 4), (N,) -> (N, C). The block march on each
        ray's own march ray; surface: pixel or density needs the neighbourhood, so whole frames of the
        distinct poses."""
        if self._own_surface:
            poses, which = torch.unique(pose, dim=0, return_inverse=True)
            return self.ray_inputs(poses)[which, ray]
        s, st = self.camera.output_size, self.arch.march_stride
        m = s // st
        block = torch.div(ray, s * st, rounding_mode="floor") * m + torch.div(ray % s, st, rounding_mode="floor")
        rot, origin = pose[:, :3, :3], pose[:, :3, 3]
        t0, length, hit = self.anchor(origin, torch.matmul(rot, self.march_dirs[block][:, :, None])[:, :, 0])
        if self.arch.anchor and self.arch.refine:
            t0, hit = self.refine(origin, torch.matmul(rot, self.dirs[ray][:, :, None])[:, :, 0], t0, hit)
        return torch.stack([t0, length, hit], dim=-1)  # ray_opacity needs surface: density (config)

    def coarser(self, factor: int = 2) -> GridLightField:
        """The same weights at 1/factor of the pixels; the march keeps its rays where it can."""
        cam, st = self.camera, self.arch.march_stride
        size = cam.output_size // factor
        new_stride = st // factor if st % factor == 0 else st
        if cam.output_size % factor or size % new_stride:
            raise ValueError(f"{cam.output_size} px with march_stride {st} cannot be made {factor}x coarser")
        small = GridLightField(dataclasses.replace(self.arch, march_stride=new_stride),
                               dataclasses.replace(cam, output_size=size, focal=cam.focal / factor))
        small.load_state_dict(self.state_dict())
        return small.to(self.occupancy.device).train(self.training)

    def flops_per_frame(self) -> int:
        """2 x multiply-adds of the MLP, plus the interpolation's weighted sums (8 corners x C per
        point and grid, or 4 per plane); the march and index arithmetic are not counted."""
        a = self.arch
        mlp = sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        corners = {"grid": 8, "triplane": 3 * 4 if a.plane_interp == "bilinear" else 0}.get(a.features, 0)
        interp = a.n_points * len(a.grid_resolutions) * corners * a.grid_channels
        return 2 * (mlp + interp) * self.n_rays
