"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022) in plain torch.

A point ``x`` in the unit cube is looked up in ``n_levels`` grids of growing
resolution. Each level stores ``n_features`` learned values per grid vertex;
the encoding of ``x`` at a level is the trilinear interpolation of its cell's 8
corner vertices. Coarse levels with few vertices are stored densely; fine levels
map vertices into a fixed-size table with the Instant-NGP spatial hash
(``x * 1 ^ y * 2654435761 ^ z * 805459861 mod T``), as tiny-cuda-nn does.

Three implementations of the same function live here:

* ``hash_encode_naive``: a Python loop over levels and corners with plain
  autograd; slow and obviously correct, the reference for tests and benchmarks.
* ``HashEncoding`` eager path: the same arithmetic, vectorised per level, with a
  hand-written backward (``torch.autograd.Function``) that recomputes corner
  indices and weights and scatters the gradient with ``index_add_``.
* ``HashEncoding`` compiled path (``compile=True``): the eager functions wrapped
  in ``torch.compile``, which fuses index computation, gather and interpolation
  into one loop over points. Falls back to eager, with one warning, if compiling
  fails.

Grid conventions: level ``l`` has resolution ``R_l = floor(base * b**l)`` with
``b = (max_resolution / base_resolution) ** (1 / (n_levels - 1))``; vertex
coordinates run over ``0..R_l`` per axis, so a level has ``(R_l + 1)**3``
vertices and ``x`` maps to ``x * R_l`` in vertex units. Inputs are clamped to
``[0, 1]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

# Instant-NGP spatial-hash primes (the x prime is 1).
_PRIME_Y = 2654435761
_PRIME_Z = 805459861

# (dx, dy, dz) of the 8 cell corners; corner c has dx = c & 1, dy = c >> 1 & 1, dz = c >> 2.
_CORNERS = tuple((c & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8))


class GridLevel(NamedTuple):
    """Static description of one level of the flat parameter table."""

    resolution: int  # R: cells per axis; vertices per axis is R + 1
    dense: bool  # vertex (i, j, k) -> row i + j (R+1) + k (R+1)^2, else hashed
    size: int  # rows of the table this level owns
    offset: int  # first row of this level in the flat table


@dataclass(frozen=True)
class HashGridSpec:
    """Shape of a multiresolution hash grid (defaults: Instant-NGP's NeRF config)."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    @property
    def table_size(self) -> int:
        """Rows of a hashed level, T = 2**log2_table_size."""
        return 1 << self.log2_table_size

    @property
    def per_level_scale(self) -> float:
        """Geometric growth factor b between consecutive levels' resolutions."""
        if self.n_levels == 1:
            return 1.0
        return math.exp(
            (math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1)
        )

    def resolutions(self) -> tuple[int, ...]:
        """Per-level resolution R_l = floor(base * b**l), l = 0..n_levels-1."""
        b = self.per_level_scale
        # The tiny epsilon keeps floor(16 * (128 ** (1/15)) ** 15) at 2048, not 2047.
        return tuple(
            int(math.floor(self.base_resolution * b**level * (1.0 + 1e-9)))
            for level in range(self.n_levels)
        )

    def levels(self) -> tuple[GridLevel, ...]:
        """Per-level resolution, dense/hashed choice, row count and row offset.

        A level is indexed densely when its (R+1)**3 vertices fit in T rows (as in
        tiny-cuda-nn); its row count is then (R+1)**3 rounded up to a multiple of 8.
        Hashed levels own exactly T rows.
        """
        out = []
        offset = 0
        for res in self.resolutions():
            n_vertices = (res + 1) ** 3
            dense = n_vertices <= self.table_size
            size = (n_vertices + 7) // 8 * 8 if dense else self.table_size
            out.append(GridLevel(res, dense, size, offset))
            offset += size
        return tuple(out)

    @property
    def n_rows(self) -> int:
        """Rows of the flat table over all levels (each row holds n_features values)."""
        last = self.levels()[-1]
        return last.offset + last.size

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features


# --------------------------------------------------------------------------- reference


def hash_encode_naive(x: Tensor, table: Tensor, spec: HashGridSpec) -> Tensor:
    """Slow, obviously-correct hash encoding with plain autograd (the reference).

    Args:
        x: (N, 3) positions in [0, 1] (clamped).
        table: (n_rows * n_features,) flat parameter table, or (n_rows, n_features).
        spec: the grid layout.

    Returns:
        (N, n_levels * n_features) features, level-major: level l occupies
        columns [l * n_features, (l + 1) * n_features).
    """
    rows = table.reshape(spec.n_rows, spec.n_features)
    x = x.clamp(0.0, 1.0)
    feats = []
    for level in spec.levels():
        res = level.resolution
        level_rows = rows[level.offset : level.offset + level.size]
        pos = x * res
        cell = torch.floor(pos).clamp(0, res - 1)  # keeps x == 1 inside the last cell
        frac = pos - cell
        cell = cell.long()
        acc = torch.zeros(x.shape[0], spec.n_features, dtype=table.dtype, device=x.device)
        for dx, dy, dz in _CORNERS:
            vx, vy, vz = cell[:, 0] + dx, cell[:, 1] + dy, cell[:, 2] + dz
            if level.dense:
                index = vx + vy * (res + 1) + vz * (res + 1) ** 2
            else:
                index = (vx * 1 ^ vy * _PRIME_Y ^ vz * _PRIME_Z) % spec.table_size
            weight = torch.ones_like(frac[:, 0])
            for axis, d in enumerate((dx, dy, dz)):
                f = frac[:, axis]
                weight = weight * (f if d else 1.0 - f)
            acc = acc + weight[:, None] * level_rows[index]
        feats.append(acc)
    return torch.cat(feats, dim=-1)


# --------------------------------------------------------------------------- fast path


def _level_corners(x: Tensor, level: GridLevel, hash_mask: int) -> tuple[list[Tensor], list[Tensor]]:
    """Absolute table rows and trilinear weights of the 8 corners around each point.

    Args:
        x: (N, 3) positions, already clamped to [0, 1].
        level: static level description.
        hash_mask: T - 1 (T is a power of two, so ``mod T`` is ``& (T - 1)``).

    Returns:
        rows: 8 tensors (N,) int64, absolute row in the flat table.
        weights: 8 tensors (N,) of x.dtype, summing to 1 per point.
    """
    res = level.resolution
    pos = x * res
    cell_f = torch.floor(pos).clamp(0, res - 1)
    frac = pos - cell_f
    cell = cell_f.to(torch.int64)
    i, j, k = cell[:, 0], cell[:, 1], cell[:, 2]
    fx, fy, fz = frac[:, 0], frac[:, 1], frac[:, 2]
    wx, wy, wz = (1.0 - fx, fx), (1.0 - fy, fy), (1.0 - fz, fz)
    wxy = [wx[dx] * wy[dy] for dy in (0, 1) for dx in (0, 1)]  # index dx + 2 dy
    weights = [wxy[dx + 2 * dy] * wz[dz] for dx, dy, dz in _CORNERS]
    if level.dense:
        s1 = res + 1
        s2 = s1 * s1
        base = i + j * s1 + k * s2 + level.offset
        rows = [base + (dx + dy * s1 + dz * s2) for dx, dy, dz in _CORNERS]
    else:
        # Products stay well inside int64 (R <= 2**20); the low bits of the
        # int64 XOR equal those of tiny-cuda-nn's uint32 arithmetic.
        hx = (i, i + 1)
        hy0 = j * _PRIME_Y
        hz0 = k * _PRIME_Z
        hy = (hy0, hy0 + _PRIME_Y)
        hz = (hz0, hz0 + _PRIME_Z)
        hxy = [hx[dx] ^ hy[dy] for dy in (0, 1) for dx in (0, 1)]
        rows = [((hxy[dx + 2 * dy] ^ hz[dz]) & hash_mask) + level.offset for dx, dy, dz in _CORNERS]
    return rows, weights


def _encode_forward(x: Tensor, rows: Tensor, levels: tuple[GridLevel, ...], hash_mask: int) -> Tensor:
    """(N, 3) positions, (n_rows, F) table -> (N, L * F) features."""
    x = x.clamp(0.0, 1.0)
    feats = []
    for level in levels:
        corner_rows, weights = _level_corners(x, level, hash_mask)
        acc = None
        for r, w in zip(corner_rows, weights):
            term = w[:, None] * rows[r]
            acc = term if acc is None else acc + term
        feats.append(acc)
    return torch.cat(feats, dim=-1)


def _level_scatter_args(
    x: Tensor, grad_level: Tensor, level: GridLevel, hash_mask: int
) -> tuple[Tensor, Tensor]:
    """Flat (row * F + feature) indices and values to scatter for one level.

    Args:
        x: (N, 3) clamped positions.
        grad_level: (N, F) gradient of this level's output columns.

    Returns:
        index: (8 * N * F,) int32 (int64 if the table is too large for int32).
        values: (8 * N * F,) weight * grad.
    """
    n_features = grad_level.shape[1]
    corner_rows, weights = _level_corners(x, level, hash_mask)
    feature = torch.arange(n_features, device=x.device)
    index = torch.stack(corner_rows)[:, :, None] * n_features + feature  # (8, N, F)
    values = torch.stack(weights)[:, :, None] * grad_level  # (8, N, F)
    return index.reshape(-1), values.reshape(-1)


class _Kernels:
    """Forward and backward implementations for one spec (eager or compiled)."""

    def __init__(self, spec: HashGridSpec, compile: bool) -> None:
        self.levels = spec.levels()
        self.hash_mask = spec.table_size - 1
        self.n_features = spec.n_features
        self.index_dtype = torch.int32 if spec.n_rows * spec.n_features < 2**31 else torch.int64
        levels, mask, index_dtype = self.levels, self.hash_mask, self.index_dtype

        def forward(x: Tensor, rows: Tensor) -> Tensor:
            return _encode_forward(x, rows, levels, mask)

        def scatter_args(x: Tensor, grad_level: Tensor, level_id: int) -> tuple[Tensor, Tensor]:
            index, values = _level_scatter_args(x, grad_level, levels[level_id], mask)
            return index.to(index_dtype), values

        self._eager = (forward, scatter_args)
        self.forward: Callable[[Tensor, Tensor], Tensor] = forward
        self.scatter_args: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]] = scatter_args
        self.compiled = False
        if compile:
            self._try_compile()

    def _try_compile(self) -> None:
        try:
            self.forward = torch.compile(self._eager[0], dynamic=False)
            self.scatter_args = torch.compile(self._eager[1], dynamic=False)
            self.compiled = True
        except Exception as err:  # noqa: BLE001 - any failure means "use eager"
            self._fall_back(err)

    def _fall_back(self, err: Exception) -> None:
        warnings.warn(
            f"torch.compile of the hash encoding failed ({type(err).__name__}: {err}); using eager.",
            RuntimeWarning,
            stacklevel=3,
        )
        self.forward, self.scatter_args = self._eager
        self.compiled = False

    def run_forward(self, x: Tensor, rows: Tensor) -> Tensor:
        if self.compiled:
            try:
                return self.forward(x, rows)
            except Exception as err:  # noqa: BLE001 - compile errors surface on first call
                self._fall_back(err)
        return self.forward(x, rows)

    def run_backward(self, x: Tensor, grad_out: Tensor, n_rows: int) -> Tensor:
        """(N, L * F) output gradient -> (n_rows * F,) table gradient."""
        grad_table = torch.zeros(n_rows * self.n_features, dtype=grad_out.dtype, device=grad_out.device)
        x = x.clamp(0.0, 1.0)
        grad_out = grad_out.contiguous()
        n_features = self.n_features
        # One level at a time keeps the scatter's index/value buffers small
        # (8 N F entries instead of 8 N L F) and the destination rows of one level
        # close together in memory.
        for level_id in range(len(self.levels)):
            grad_level = grad_out[:, level_id * n_features : (level_id + 1) * n_features]
            if self.compiled:
                try:
                    index, values = self.scatter_args(x, grad_level, level_id)
                except Exception as err:  # noqa: BLE001
                    self._fall_back(err)
                    index, values = self.scatter_args(x, grad_level, level_id)
            else:
                index, values = self.scatter_args(x, grad_level, level_id)
            grad_table.index_add_(0, index, values)
        return grad_table


class _HashEncodeFunction(torch.autograd.Function):
    """Hash encoding with a hand-written backward w.r.t. the table only.

    The gradient w.r.t. the positions is not computed (returned as None): the
    teacher never optimises positions (no pose refinement), and the positional
    gradient of trilinear interpolation is piecewise constant and rarely useful.
    Works for any floating dtype (float64 for gradcheck).
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, kernels: _Kernels, n_rows: int) -> Tensor:  # type: ignore[override]
        rows = table.view(n_rows, kernels.n_features)
        out = kernels.run_forward(x.to(table.dtype), rows)
        # Indices and weights are recomputed in backward: storing them would cost
        # 8 L N (index + weight) entries, far more than the (N, 3) positions.
        ctx.save_for_backward(x)
        ctx.kernels = kernels
        ctx.n_rows = n_rows
        ctx.table_dtype = table.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = ctx.kernels.run_backward(x.to(ctx.table_dtype), grad_out.to(ctx.table_dtype), ctx.n_rows)
        return None, grad_table, None, None


class HashEncoding(nn.Module):
    """Instant-NGP multiresolution hash encoding.

    Args:
        spec: grid layout.
        compile: wrap the index/weight/gather computations in ``torch.compile``
            (one compiled graph for the forward, one per level for the backward;
            shapes are specialised, so keep the batch size fixed to avoid
            recompiles). Falls back to eager with a warning if compiling fails.

    Parameters:
        table: (n_rows * n_features,) all levels' features, level after level
            (see ``HashGridSpec.levels`` for offsets), init uniform(-1e-4, 1e-4).
    """

    def __init__(self, spec: HashGridSpec, compile: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.n_rows = spec.n_rows
        self.table = nn.Parameter(torch.empty(self.n_rows * spec.n_features).uniform_(-1e-4, 1e-4))
        self._kernels = _Kernels(spec, compile)

    @property
    def out_dim(self) -> int:
        return self.spec.out_dim

    @property
    def compiled(self) -> bool:
        """Whether the compiled path is in use (False after a fallback)."""
        return self._kernels.compiled

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3) positions in [0, 1] -> (N, n_levels * n_features) features (table dtype).

        No gradient flows to ``x``.
        """
        return _HashEncodeFunction.apply(x, self.table, self._kernels, self.n_rows)

    def extra_repr(self) -> str:
        return f"{self.spec}, n_rows={self.n_rows}, compiled={self.compiled}"
