"""ctypes wrappers of the hash encoding's C kernels (``csrc/hashgrid.c``; built by ``native.load``)."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import native

ABI_VERSION = 4


def _declare(lib: ctypes.CDLL) -> None:
    i64, i32, u32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"hg_forward_{suffix}")
        fwd.argtypes = [ptr, i64, ptr, ptr, i32, i32, ptr, ptr, ptr, u32]
        fwd.restype = None
        bwd = getattr(lib, f"hg_backward_{suffix}")
        bwd.argtypes = [ptr, i64, ptr, ptr, i32, i32, ptr, ptr, ptr, u32]
        bwd.restype = None


def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None (with one warning) where they cannot be built."""
    return native.load("hashgrid", ABI_VERSION, _declare)


def supports(x: Tensor, table: Tensor) -> bool:
    return x.device.type == "cpu" and table.device.type == "cpu" and table.dtype in (torch.float32, torch.float64)


class LevelArgs:
    """Per-level constants as C arrays (kept alive with the module that owns them)."""

    def __init__(self, resolutions: list[int], offsets: list[int], dense: list[bool], n_features: int,
                 hash_mask: int) -> None:
        self.L, self.F, self.mask = len(resolutions), n_features, hash_mask
        self.res = torch.tensor(resolutions, dtype=torch.int32)
        self.offset = torch.tensor(offsets, dtype=torch.int64)
        self.dense = torch.tensor(dense, dtype=torch.uint8)

    def pointers(self) -> tuple[int, int, int]:
        return self.res.data_ptr(), self.offset.data_ptr(), self.dense.data_ptr()


def forward(lib: ctypes.CDLL, x: Tensor, table: Tensor, levels: LevelArgs) -> Tensor:
    """(N, 3) positions in [0, 1] (contiguous, table dtype), (n_rows * F,) table -> (L * F, N) features."""
    out = torch.empty(levels.L * levels.F, x.shape[0], dtype=table.dtype)
    fn = lib.hg_forward_f32 if table.dtype == torch.float32 else lib.hg_forward_f64
    fn(x.data_ptr(), x.shape[0], table.data_ptr(), out.data_ptr(), levels.L, levels.F, *levels.pointers(),
       levels.mask)
    return out


def backward(lib: ctypes.CDLL, x: Tensor, grad_out: Tensor, numel: int, levels: LevelArgs) -> Tensor:
    """(N, 3) positions, (N, L * F) output gradient -> (numel,) table gradient."""
    grad_table = torch.zeros(numel, dtype=grad_out.dtype)
    grad_t = grad_out.t().contiguous()  # points contiguous: each level reads its gradient rows in order
    fn = lib.hg_backward_f32 if grad_out.dtype == torch.float32 else lib.hg_backward_f64
    fn(x.data_ptr(), x.shape[0], grad_t.data_ptr(), grad_table.data_ptr(), levels.L, levels.F, *levels.pointers(),
       levels.mask)
    return grad_table
