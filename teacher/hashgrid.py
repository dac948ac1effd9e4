"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022): torch, and C kernels on CPU.

A point ``x`` in the unit cube is looked up in ``n_levels`` grids of growing
resolution. Each level stores ``n_features`` learned values per grid vertex;
the encoding of ``x`` at a level is the trilinear interpolation of its cell's 8
corner vertices. Coarse levels with few vertices are stored densely; fine levels
map vertices into a fixed-size table with the Instant-NGP spatial hash
(``x * 1 ^ y * 2654435761 ^ z * 805459861 mod T``), as tiny-cuda-nn does.

Implementations of the same function:

* ``hash_encode_naive``: a Python loop over levels and corners with plain
  autograd; slow and obviously correct, the reference for tests and benchmarks.
* ``HashEncoding`` (eager): corner rows and weights for all 8 corners computed
  with tensor ops over (level, point), one level at a time; a hand-written
  backward (``torch.autograd.Function``) recomputes them and scatters the
  gradient into the table with ``index_add_``. No gradient w.r.t. positions.
* ``HashEncoding(compile=True)``: the same functions through ``torch.compile``
  (inductor fuses index, weight, gather and interpolation into one vectorised
  loop over (level, point)); the backward's ``index_add_`` runs levels in
  parallel on CPU threads. Falls back to eager, with one warning, if compiling
  fails. This is the path on CUDA.
* On CPU tensors, by default: fused C kernels (``hashgrid_native``, built on
  first use) that gather in the forward and add each weighted gradient where it
  is computed in the backward, instead of materialising (L, 8, F, N) index and
  value arrays and scattering them. Falls back to the torch path without a C
  compiler.

Measured on the 2-core CPU here at 2^18 points (table 2^19): the C kernels take
~37 ms forward and ~59 ms backward; the compiled torch path ~38 ms forward (inductor
vectorises the gathers as well) but ~260 ms backward, where it writes and
re-reads 16 L index/value pairs per point before scattering them.

Grid conventions: level ``l`` has resolution ``R_l = floor(base * b**l)`` with
``b = (max_resolution / base_resolution) ** (1 / (n_levels - 1))``; vertex
coordinates run over ``0..R_l`` per axis, so a level has ``(R_l + 1)**3``
vertices and ``x`` maps to ``x * R_l`` in vertex units. Inputs are clamped to
``[0, 1]``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import hashgrid_native

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
#
# Layout: points run along the last (contiguous) axis, levels along the first, so
# each kernel is a loop over (level, point) that inductor vectorises over points;
# per-level constants come in as small (L, 1) tensors, so one compiled graph serves
# every level and every batch size (``dynamic=True``).


def _level_params(spec: HashGridSpec) -> dict[str, Tensor]:
    """(L, 1) per-level constants: resolution (float), vertices per axis, row offset, dense flag."""
    levels = spec.levels()
    return {
        "resolution": torch.tensor([[float(lv.resolution)] for lv in levels]),
        "stride_y": torch.tensor([[lv.resolution + 1] for lv in levels], dtype=torch.int64),
        "offset": torch.tensor([[lv.offset] for lv in levels], dtype=torch.int64),
        "dense": torch.tensor([[lv.dense] for lv in levels], dtype=torch.bool),
    }


def _corners(
    xt: Tensor, resolution: Tensor, stride_y: Tensor, offset: Tensor, dense: Tensor, hash_mask: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Table rows and trilinear weights of the 8 cell corners, all levels at once.

    Args:
        xt: (3, N) positions (transposed), clamped to [0, 1]; NaN gives NaN
            weights but in-bounds rows.
        resolution: (L, 1) float R_l; stride_y: (L, 1) int64 R_l + 1;
        offset: (L, 1) int64 first row of each level; dense: (L, 1) bool.

    Returns:
        rows: 8 tensors (L, N) int64, absolute rows in the flat table.
        weights: 8 tensors (L, N) of xt.dtype; corner c = dx + 2 dy + 4 dz.
    """
    xt = xt.clamp(0.0, 1.0)
    res = resolution.to(xt.dtype)
    pos = xt[:, None, :] * res  # (3, L, N)
    cell_f = torch.minimum(torch.floor(pos).clamp_min(0.0), res - 1.0)  # x == 1 stays in the last cell
    frac = pos - cell_f
    # The integer clamp only matters for NaN positions (whose float->int value is
    # undefined): it keeps every gather in bounds, and their features come out NaN.
    # (torch.nan_to_num here would stop inductor from vectorising the kernel.)
    cell = torch.minimum(cell_f.to(torch.int64).clamp_min(0), stride_y - 2)
    i, j, k = cell[0], cell[1], cell[2]
    wx, wy, wz = (1.0 - frac[0], frac[0]), (1.0 - frac[1], frac[1]), (1.0 - frac[2], frac[2])
    stride_z = stride_y * stride_y
    rows, weights = [], []
    for dx, dy, dz in _CORNERS:
        # Both indexings are computed and one is selected per level: a few integer
        # ops per element, cheaper than separate graphs for dense and hashed levels.
        # The int64 products stay exact (R <= 2**20) and their low bits equal
        # tiny-cuda-nn's wrapping uint32 arithmetic, so ``& (T - 1)`` is ``mod T``.
        dense_row = (i + dx) + (j + dy) * stride_y + (k + dz) * stride_z
        hashed_row = ((i + dx) ^ ((j + dy) * _PRIME_Y) ^ ((k + dz) * _PRIME_Z)) & hash_mask
        rows.append(torch.where(dense, dense_row, hashed_row) + offset)
        weights.append(wx[dx] * wy[dy] * wz[dz])
    return rows, weights


def _encode_t(
    xt: Tensor, table: Tensor, n_features: int, hash_mask: int,
    resolution: Tensor, stride_y: Tensor, offset: Tensor, dense: Tensor,
) -> Tensor:
    """(3, N) positions, (n_rows * F,) table -> (L * F, N) features (transposed)."""
    rows, weights = _corners(xt, resolution, stride_y, offset, dense, hash_mask)
    feats: list[Tensor] = []
    for f in range(n_features):
        acc = None
        for r, w in zip(rows, weights, strict=True):
            term = w * table[r * n_features + f]
            acc = term if acc is None else acc + term
        feats.append(acc)
    # explicit row count: reshape(-1, 0) is ambiguous for an empty batch
    return torch.stack(feats, dim=1).reshape(resolution.shape[0] * n_features, xt.shape[1])  # (L, F, N) -> (L * F, N)


def _scatter_args_t(
    xt: Tensor, grad_t: Tensor, n_features: int, hash_mask: int,
    resolution: Tensor, stride_y: Tensor, offset: Tensor, dense: Tensor,
) -> tuple[Tensor, Tensor]:
    """Flat table indices and values that the backward adds into the table gradient.

    Args:
        xt: (3, n) positions; grad_t: (L * F, n) gradient of the encoding output, transposed.

    Returns:
        index: (L, 8, F, n) int32 flat index row * F + feature.
        values: (L, 8, F, n) weight * grad, table dtype.
    """
    rows, weights = _corners(xt, resolution, stride_y, offset, dense, hash_mask)
    grad_t = grad_t.reshape(-1, n_features, xt.shape[1])  # (L, F, n)
    index = torch.stack(
        [torch.stack([(r * n_features + f).to(torch.int32) for f in range(n_features)], dim=1) for r in rows],
        dim=1,
    )
    values = torch.stack([w[:, None, :] * grad_t for w in weights], dim=1)
    return index, values


_scatter_pool: ThreadPoolExecutor | None = None


def _scatter_workers() -> ThreadPoolExecutor:
    global _scatter_pool
    if _scatter_pool is None:
        _scatter_pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="hashgrid")
    return _scatter_pool


def _index_add_levels(grad_table: Tensor, index: Tensor, values: Tensor) -> None:
    """grad_table[index] += values, for (L, ...) index/values; levels split over threads on CPU.

    ``index_add_`` on a 1-D CPU tensor runs on one thread. Levels own disjoint
    rows, so each thread can take a subset of levels without atomics.
    """
    n_threads = min(torch.get_num_threads(), index.shape[0])
    if grad_table.device.type != "cpu" or n_threads <= 1:
        grad_table.index_add_(0, index.reshape(-1), values.reshape(-1))
        return

    def add(first: int) -> None:
        for level in range(first, index.shape[0], n_threads):
            grad_table.index_add_(0, index[level].reshape(-1), values[level].reshape(-1))

    pool = _scatter_workers()
    futures = [pool.submit(add, t) for t in range(1, n_threads)]
    add(0)
    for fut in futures:
        fut.result()


def _level(params: tuple[Tensor, ...], level: int) -> tuple[Tensor, ...]:
    """The (1, 1) slices of the (L, 1) level constants for one level."""
    return tuple(p[level : level + 1] for p in params)


class MaybeCompiled:
    """``fn`` run through ``torch.compile`` when enabled, else (or if compiling fails) eagerly.

    Compile errors surface on the first call (compilation is lazy); the first
    failure is reported once as a RuntimeWarning and the eager function is used
    from then on.
    """

    def __init__(self, fn: Callable, enabled: bool, **compile_kwargs) -> None:
        self.eager = fn
        self.fn = fn
        self.compiled = False
        if enabled:
            try:
                self.fn = torch.compile(fn, **compile_kwargs)
                self.compiled = True
            except Exception as err:  # noqa: BLE001 - any failure means "use eager"
                self._fall_back(err)

    def _fall_back(self, err: Exception) -> None:
        warnings.warn(
            f"torch.compile of {self.eager.__qualname__} failed ({type(err).__name__}: {err}); using eager.",
            RuntimeWarning,
            stacklevel=3,
        )
        self.fn = self.eager
        self.compiled = False

    def __call__(self, *args, **kwargs):
        if not self.compiled:
            return self.eager(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._fall_back(err)
            return self.eager(*args, **kwargs)


class _Kernels:
    """Forward and backward of the encoding for one spec, eager or compiled."""

    def __init__(self, spec: HashGridSpec, compile: bool, backward_chunk: int, native: bool = True) -> None:
        self.n_features = spec.n_features
        self.hash_mask = spec.table_size - 1
        self.backward_chunk = backward_chunk
        if spec.n_rows * spec.n_features >= 2**31:
            raise ValueError("table too large for int32 scatter indices")
        self.native = hashgrid_native.load() if native else None
        levels = spec.levels()
        self.native_levels = hashgrid_native.LevelArgs(
            [lv.resolution for lv in levels], [lv.offset for lv in levels], [lv.dense for lv in levels],
            spec.n_features, self.hash_mask)
        # Indices are in range by construction (clamped cells, masked hash), so
        # inductor's per-gather bounds check is dropped. dynamic=True: one
        # graph for every batch size, measured as fast here as a static-shape one.
        options = {"assert_indirect_indexing": False}
        n_features, hash_mask = self.n_features, self.hash_mask

        # Closures, so that the ints are compile-time constants: passed as
        # arguments, dynamic=True would make them symbolic (1.7x slower kernels).
        def encode(xt: Tensor, table: Tensor, *params: Tensor) -> Tensor:
            return _encode_t(xt, table, n_features, hash_mask, *params)

        def scatter_args(xt: Tensor, grad_t: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
            return _scatter_args_t(xt, grad_t, n_features, hash_mask, *params)

        self.encode = MaybeCompiled(encode, compile, dynamic=True, options=options)
        self.scatter_args = MaybeCompiled(scatter_args, compile, dynamic=True, options=options)

    @property
    def compiled(self) -> bool:
        return self.encode.compiled and self.scatter_args.compiled

    def use_native(self, x: Tensor, table: Tensor) -> bool:
        return self.native is not None and hashgrid_native.supports(x, table)

    def forward(self, xt: Tensor, table: Tensor, params: tuple[Tensor, ...]) -> Tensor:
        """(3, N), (n_rows * F,) -> (L * F, N)."""
        if self.encode.compiled:
            return self.encode(xt, table, *params)
        # Eager: one level at a time keeps the (L, N) temporaries cache-sized
        # (1.7x faster on CPU than all levels at once).
        return torch.cat([self.encode(xt, table, *_level(params, lv)) for lv in range(params[0].shape[0])])

    def backward(self, xt: Tensor, grad_out: Tensor, numel: int, params: tuple[Tensor, ...]) -> Tensor:
        """(3, N) positions, (N, L * F) output gradient -> (n_rows * F,) table gradient."""
        grad_table = torch.zeros(numel, dtype=grad_out.dtype, device=grad_out.device)
        n = xt.shape[1]
        # Points along the contiguous axis, like the forward: the compiled kernel
        # then reads the gradient with vector loads (2x faster than strided).
        grad_t = grad_out.t().contiguous()  # (L * F, N)
        # Chunks over points bound the index/value buffers (2 * 8 * L * F * chunk
        # entries) so they are reused from the allocator instead of growing with N.
        for start in range(0, n, self.backward_chunk):
            stop = min(start + self.backward_chunk, n)
            xt_chunk, grad_chunk = xt[:, start:stop], grad_t[:, start:stop]
            if self.scatter_args.compiled:
                index, values = self.scatter_args(xt_chunk, grad_chunk, *params)
                _index_add_levels(grad_table, index, values)
                continue
            f = self.n_features
            for lv in range(params[0].shape[0]):
                index, values = self.scatter_args(xt_chunk, grad_chunk[lv * f : (lv + 1) * f], *_level(params, lv))
                grad_table.index_add_(0, index.reshape(-1), values.reshape(-1))
        return grad_table


class _HashEncodeFunction(torch.autograd.Function):
    """Hash encoding with a hand-written backward w.r.t. the table only.

    The gradient w.r.t. the positions is not computed (None is returned): the
    teacher never optimises positions (no pose refinement), and the positional
    gradient of trilinear interpolation is piecewise constant and not used here.
    Dtype-generic (float64 works, for gradcheck).
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, kernels: _Kernels, *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.native = kernels.use_native(x, table)
        if ctx.native:
            xs = x.detach().to(table.dtype).contiguous()  # (N, 3)
            out_t = hashgrid_native.forward(kernels.native, xs, table.detach().contiguous(), kernels.native_levels)
        else:
            xs = x.detach().to(table.dtype).t().contiguous()  # (3, N)
            out_t = kernels.forward(xs, table.detach(), params)  # (L * F, N)
        # Corner indices and weights are recomputed in backward: storing them
        # would cost 16 L values per point instead of 3.
        ctx.save_for_backward(xs, *params)
        ctx.kernels = kernels
        ctx.numel = table.numel()
        # (N, L * F) view of the transposed result: the next Linear layer reads
        # it as a transposed matrix, no copy.
        return out_t.t()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        xs, *params = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1] and ctx.native:
            grad_table = hashgrid_native.backward(ctx.kernels.native, xs, grad_out.to(xs.dtype), ctx.numel,
                                                  ctx.kernels.native_levels)
        elif ctx.needs_input_grad[1]:
            grad_table = ctx.kernels.backward(xs, grad_out.to(xs.dtype), ctx.numel, tuple(params))
        return (None, grad_table, None) + (None,) * len(params)


class HashEncoding(nn.Module):
    """Instant-NGP multiresolution hash encoding.

    Args:
        spec: grid layout.
        compile: run the index/weight/gather computations through
            ``torch.compile`` (one graph for the forward, one for the backward's
            index/weight computation, both shape-dynamic). Cold compile takes
            seconds to a minute; results are cached on disk by inductor. Falls
            back to eager, with one warning, if compiling fails.
        backward_chunk: points per backward chunk (bounds the torch path's scatter buffers).
        native: on CPU tensors, use the fused C kernels (``hashgrid_native``) when
            they can be built; otherwise, and on CUDA, the torch path.

    Parameters:
        table: (n_rows * n_features,) features of all levels, level after level
            (offsets in ``spec.levels()``), row-major (row, feature);
            init uniform(-1e-4, 1e-4).
    """

    def __init__(self, spec: HashGridSpec, compile: bool = False, backward_chunk: int = 1 << 16,
                 native: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.table = nn.Parameter(torch.empty(spec.n_rows * spec.n_features).uniform_(-1e-4, 1e-4))
        for name, value in _level_params(spec).items():
            self.register_buffer(f"level_{name}", value, persistent=False)
        self._kernels = _Kernels(spec, compile, backward_chunk, native)

    @property
    def out_dim(self) -> int:
        return self.spec.out_dim

    @property
    def compiled(self) -> bool:
        """Whether the compiled torch path is in use (False after a fallback)."""
        return self._kernels.compiled

    @property
    def native(self) -> bool:
        """Whether CPU inputs go through the C kernels."""
        return self._kernels.native is not None

    def forward(self, x: Tensor) -> Tensor:
        """Encode positions.

        Args:
            x: (N, 3) positions in [0, 1] (clamped; a NaN position gives NaN features).

        Returns:
            (N, n_levels * n_features) features in the table's dtype, level-major
            (level l at columns [l F, (l + 1) F)). The result is a transposed view
            (stride (1, N)); call ``.contiguous()`` if a kernel needs row-major.
            No gradient flows to ``x``.
        """
        return self.encode(x, self.table)

    def encode(self, x: Tensor, table: Tensor) -> Tensor:
        """``forward`` with an explicit (n_rows * n_features,) table (functional use, gradcheck)."""
        if table.shape != self.table.shape:
            raise ValueError(f"table must have shape {tuple(self.table.shape)}, got {tuple(table.shape)}")
        params = (self.level_resolution, self.level_stride_y, self.level_offset, self.level_dense)
        return _HashEncodeFunction.apply(x, table, self._kernels, *params)

    def extra_repr(self) -> str:
        return f"{self.spec}, n_rows={self.spec.n_rows}, compiled={self.compiled}, native={self.native}"
