"""The hash encoding's CPU kernels in C (``csrc/hashgrid.c``), built on first use and loaded with ctypes.

The library is compiled once per machine with the system C compiler (``$CC``,
else ``cc``/``gcc``; about a second) into a cache folder (``$NELF_CACHE_DIR``,
else ``~/.cache/nelf-pipeline``) under a name that hashes the source and the
flags, written to a temporary name and renamed, so concurrent first uses are
safe. Without a compiler, or if building fails, ``load()`` returns None once with
a warning and the torch path is used instead.

Threads: the library is built with OpenMP and binds to the libgomp that torch
has loaded, so it runs on torch's own threads (``torch.set_num_threads``); where
``-fopenmp`` does not build, it is built single-threaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "hashgrid.c"
# -march=native: the library is built on the machine that runs it (the name hashes the
# CPU model too); AVX-512 gave ~10% on the gathers here.
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno")
ABI_VERSION = 3

_lib: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    return Path(os.environ.get("NELF_CACHE_DIR") or Path.home() / ".cache" / "nelf-pipeline")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def _build(cc: str, flags: tuple[str, ...]) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + repr((flags, cc, platform.machine(), _cpu_model())).encode())
    out = cache_dir() / f"hashgrid-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{cc} failed")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _build_any(cc: str) -> Path:
    """With OpenMP if the compiler has it, else single-threaded."""
    try:
        return _build(cc, (*FLAGS, "-fopenmp"))
    except (RuntimeError, subprocess.TimeoutExpired):
        return _build(cc, FLAGS)


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
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("NELF_NATIVE_HASHGRID", "1") == "0":
        return None
    try:
        cc = _compiler()
        if cc is None:
            raise RuntimeError("no C compiler found (set CC)")
        lib = ctypes.CDLL(str(_build_any(cc)))
        lib.hg_abi_version.restype = ctypes.c_int
        if lib.hg_abi_version() != ABI_VERSION:
            raise RuntimeError("stale library")
        _declare(lib)
        _lib = lib
    except Exception as err:  # noqa: BLE001 - any failure means "use the torch path"
        warnings.warn(f"native hash-grid kernels unavailable ({err}); using the torch path", RuntimeWarning,
                      stacklevel=2)
    return _lib


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
