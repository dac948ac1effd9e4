"""The teacher's C kernels (``csrc/*.c``): built on first use with the system compiler, loaded with ctypes.

Each library is compiled once per machine (``$CC``, else ``cc``/``gcc``/``clang``;
about a second, plain C with no headers beyond libc) into a cache folder
(``$NELF_CACHE_DIR``, else ``~/.cache/nelf-pipeline``) under a name that hashes
the source, the flags, the compiler and the CPU (model name and instruction-set
flags); it is written to a
temporary name and renamed, so concurrent first uses are safe. Without a
compiler, or if building fails, ``load`` returns None once with a warning, and
callers use their torch path. ``NELF_NATIVE=0`` turns the kernels off.

Threads: built with ``-fopenmp``, a library binds to the libgomp that torch has
already loaded, so it runs on torch's own threads (``torch.set_num_threads``)
instead of competing with their spinning workers; where ``-fopenmp`` does not
build, it is built single-threaded.
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
from collections.abc import Callable
from pathlib import Path

import torch  # noqa: F401 - loads torch's libgomp before any kernel library binds to it

from pipeline import machine

CSRC = Path(__file__).with_name("csrc")
# What this module compiles at run time is code of every stage that imports it: the stage
# cache hashes these files with the stage's Python modules (pipeline/codedeps.py).
BUILD_SOURCES = ("csrc/*.c",)
# -march=native: built on the machine that runs it (the name hashes the CPU model).
# -ffp-contract=off: float32 results must round as the torch/CUDA twins do (no FMA).
# -fno-trapping-math: lets the compiler vectorise float->int conversions (no FP traps are used).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared", "-fno-math-errno")

_libs: dict[str, ctypes.CDLL | None] = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(source: Path, cc: str, flags: tuple[str, ...]) -> Path:
    """The library's path in the cache, compiled first if absent. The name hashes the
    CPU's model and instruction-set flags (`-march=native`: a build for a newer CPU dies
    with an illegal instruction on an older one that reports the same model name)."""
    cpu = machine.cpu_info().fingerprint()
    key = hashlib.sha256(source.read_bytes() + repr((flags, cc, platform.machine(), cpu)).encode())
    out = machine.cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, "-o", tmp, str(source), "-lm"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{cc} failed")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def load(name: str, abi_version: int, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """``csrc/<name>.c`` built and loaded (cached per process), or None with one warning.

    The library exports ``int abi_version(void)``, which must return
    ``abi_version`` (a stale cached build is refused); ``declare`` sets the
    ctypes signatures of its functions.
    """
    if name in _libs:
        return _libs[name]
    _libs[name] = None
    if os.environ.get("NELF_NATIVE", "1") == "0":
        return None
    try:
        cc = _compiler()
        if cc is None:
            raise RuntimeError("no C compiler found (set CC)")
        source = CSRC / f"{name}.c"
        try:
            path = _build(source, cc, (*FLAGS, "-fopenmp"))
        except (RuntimeError, subprocess.TimeoutExpired):
            path = _build(source, cc, FLAGS)
        lib = ctypes.CDLL(str(path))
        lib.abi_version.restype = ctypes.c_int
        if lib.abi_version() != abi_version:
            raise RuntimeError(f"{path.name} is stale (ABI {lib.abi_version()}, expected {abi_version})")
        declare(lib)
        _libs[name] = lib
    except Exception as err:  # noqa: BLE001 - any failure means "use the torch path"
        warnings.warn(f"C kernels '{name}' unavailable ({err}); using the torch path", RuntimeWarning, stacklevel=3)
    return _libs[name]
