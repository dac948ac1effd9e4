"""Fault injection for the reliability tests, and the free-disk query they override.

`NELF_FAULT_INJECT` holds comma-separated faults, read by the stages' loops:

    nan_at_step:N       the training loss is NaN at step N (teacher and student)
    delay:SECONDS       sleep this long per training step / distilled view (so a
                        test can interrupt a stage at a known point)
    free_bytes:N        pretend the output disk has N free bytes

Unset (the normal case) every hook is a no-op. It is an environment variable,
not a config value, so it never enters a stage's cache key.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

ENV = "NELF_FAULT_INJECT"


def _fault(name: str) -> str | None:
    for item in os.environ.get(ENV, "").split(","):
        key, _, value = item.strip().partition(":")
        if key == name:
            return value
    return None


def nan_at(step: int) -> bool:
    """True if a NaN loss is injected at training step `step`."""
    value = _fault("nan_at_step")
    return value is not None and int(value) == step


def delay() -> None:
    value = _fault("delay")
    if value:
        time.sleep(float(value))


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    value = _fault("free_bytes")
    if value is not None:
        return int(value)
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free
