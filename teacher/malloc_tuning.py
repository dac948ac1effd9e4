"""glibc allocator tuning for the CPU training loop.

The hash encoding allocates and frees tens of megabytes of temporaries per
step (corner indices, weights, gradient buffers). With glibc's defaults, blocks
that large are served by ``mmap`` and returned to the kernel on ``free``, and the
heap top is trimmed back as soon as it exceeds 128 KiB; every step then pays for
page faults and zeroing of fresh pages. On the 2-core machine this cost as much
as the arithmetic itself. Keeping freed memory inside the process removes it.

Work whose temporaries change size from call to call (distill's views: a forward-facing or
unbounded scene's rays take hundreds of thousands of samples more or less from one view to the
next) then fragments the heap, and it grows without bound: 100 MB a view, 24 GB after 540 views
of a forward-facing capture. Such a loop calls `release_freed` now and then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# From <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False
_libc = None


def tune_malloc(trim_threshold_bytes: int = 1 << 40) -> bool:
    """Stop glibc from returning freed memory to the OS (process-wide, idempotent).

    Sets ``M_MMAP_MAX = 0`` (large blocks come from the heap, not ``mmap``) and
    ``M_TRIM_THRESHOLD = trim_threshold_bytes`` (the heap top is effectively never
    trimmed). Resident memory then stays at the peak of the training step, which is
    what a training loop reaches anyway.

    Returns True if the settings were applied (Linux with glibc), False elsewhere
    (macOS, Windows, musl), where it does nothing.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only; musl lacks it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt takes an int; clamp to the largest value it can hold.
    threshold = min(int(trim_threshold_bytes), 2**31 - 1)
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    _applied = bool(ok)
    global _libc
    _libc = libc if _applied else None
    return _applied


def release_freed() -> bool:
    """Hand the freed pages of every heap back to the OS (glibc's malloc_trim) where
    `tune_malloc` kept them; True if it ran. The pages a later call needs fault in again, so a
    loop calls it every few iterations, not every one."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
