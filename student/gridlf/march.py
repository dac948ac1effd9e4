"""The march: where along each pixel's ray the scene is, in ops onnxruntime runs fast.

Every function here runs inside the exported graph (CPU, WASM and WebGPU backends), so each
is written in the few ops those backends run fast and correctly: Gather(Elements), MatMul,
elementwise arithmetic, Floor, ArgMax, MaxPool, NonZero. Their slow, plain twins are in
`reference.py`; tests/test_gridlf.py compares each pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_interval", "compact", "exact_matmul", "first_opaque", "lookup", "march_index", "neighbourhood_hits",
           "window_points"]


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


def lookup(table: Tensor, index: Tensor) -> Tensor:
    """table[index] for a 1-D table and an index tensor of any shape (float or integer, exact),
    as one GatherElements over the flattened index: onnxruntime's Gather copies each element
    on its own, 3.4x slower for single floats (a third of the lego pixel march's time)."""
    return torch.gather(table, 0, index.reshape(-1).long()).reshape(index.shape)


def exact_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b in float32 even under autocast (CUDA training runs the student in bf16): the MatMuls
    here stand for exact arithmetic (running sums, products by powers of two), which 8 bits of
    mantissa would break; the graph's are float32 anyway."""
    with torch.autocast(a.device.type, enabled=False):
        return torch.matmul(a.float(), b.float())


def march_index(o: Tensor, v: Tensor, start: Tensor, step: Tensor, n: int, resolution: int) -> Tensor:
    """Flat cell index x R^2 + y R + z (float, exact up to 2^24 cells) of n samples at
    start + (k + 1/2) step, k = 0..n-1, on rays o + t v (..., 3) in cell units of an R^3 grid
    (clamped to the grid): start, step (...) -> (..., n). Per axis the sample is the ray's point
    at `start` plus k + 1/2 steps, so each axis costs one broadcast multiply-add on (..., n):
    onnxruntime broadcasts (..., n) by (..., 1) several times faster than (..., n, 1) by
    (..., 1, 3). The plain twin is `reference.cell_index`."""
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
    `grid` packed (`surfaces.pack_density`): 0 outside the dilated grid, else 1 + the cell's
    mean density. Each sample stands for its step (nearest cell, midpoint rule). Inside the
    step where the optical depth passes -ln(1 - opacity) the crossing is placed linearly (exact
    in a uniform medium). Returns t_surface, found, t_cell, in_cell (...): start + n step where
    there is none; and the ray's opacity over all n samples, 1 - exp(-optical depth) (...).
    median: the crossing is where the optical depth reaches the smaller of -ln(1 - opacity)
    and half its total, the median of where the ray's light ends: a ray the scene covers in
    part (a silhouette pixel) stops in what it passes, and every ray with any density is found;
    one at least 1 - (1 - opacity)^2 opaque stops where it did. The slow twin:
    `reference.first_opaque_reference`.

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


def window_points(origin: Tensor, d: Tensor, t0: Tensor, step: Tensor, k: int, lo: Tensor, size: Tensor) -> Tensor:
    """The k points t0 + (j + 1/2) step, j < k, of rays origin + t d (..., 3), t0, step (...), in
    the box [lo, lo + size] mapped to [0, 1]^3 -> (..., k, 3). Per axis on (...) vectors, then
    one MatMul spreads them over the points: onnxruntime pays per broadcast row, and the plain
    (..., k, 1) x (..., 1, 3) form (`reference.window_points_reference`) took 2.5 ms of a lego
    frame, this 0.3."""
    cols, deltas = [], []
    for i in range(3):
        a, b = (origin[..., i] - lo[i]) / size[i], d[..., i] / size[i]
        cols.append(a + t0 * b)
        deltas.append(step * b)
    eye = torch.eye(3, device=d.device, dtype=d.dtype)
    u = torch.arange(k, device=d.device, dtype=d.dtype) + 0.5
    spread = torch.cat([eye.repeat(1, k), torch.kron(u[None], eye)])  # (6, 3k): column 3j + i is point j, axis i
    return exact_matmul(torch.stack(cols + deltas, dim=-1), spread).reshape(*t0.shape, k, 3)
