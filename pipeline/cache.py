"""The stage cache: a key per stage from its inputs, a record written last, a lock.

A stage's key hashes (its config section, its upstream stages' keys, the
source code of the packages it runs, and any external input such as the scene
files). Its output folder counts as done only when `record.json` exists and
holds the same key; the record is written after every other output, so a
crash at any point leaves the stage "stale" or "missing", never "done".
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StageError
from .io import atomic_write_json

RECORD = "record.json"
PROGRESS = ".progress.json"  # key of the unfinished run whose partial outputs may be resumed
LOCK = ".lock"


def read_record(out_dir: Path) -> dict | None:
    """The stage's record, or None if absent or not a valid record (never an error:
    an unreadable record only means the stage is not done)."""
    try:
        rec = json.loads((out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def stage_state(out_dir: Path, key: str) -> str:
    """'done' (record with this key), 'stale' (record with another key) or 'missing'."""
    rec = read_record(out_dir)
    if rec is None:
        return "missing"
    return "done" if rec.get("key") == key else "stale"


@dataclass
class StageLock:
    """An exclusive, non-blocking flock on the stage folder; released on exit or crash."""

    path: Path
    description: str
    _fd: int | None = None

    def __enter__(self) -> StageLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StageError(f"cannot write the output folder {self.path.parent} ({err.strerror}: "
                             f"{err.filename}); set runs_dir to a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StageError(f"{self.description} is already running in another process "
                             f"(lock {self.path}); wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def prepare_output(out_dir: Path, key: str, force: bool) -> bool:
    """Get `out_dir` ready for a run with `key`; return True if partial outputs of an
    interrupted run with the same key are kept for resuming.

    Outputs of other settings (or everything, with force) are removed: they
    must not leak into this run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECORD).unlink(missing_ok=True)
    progress = out_dir / PROGRESS
    resume = False
    if not force and progress.exists():
        try:
            resume = json.loads(progress.read_text()).get("key") == key
        except (ValueError, AttributeError):  # torn or foreign file: start over
            resume = False
    if resume:
        for tmp in out_dir.rglob(".*.tmp"):  # torn writes of the interrupted run (pipeline/io.py)
            tmp.unlink()
    else:
        for child in out_dir.iterdir():
            if child.name == LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        atomic_write_json(progress, {"key": key})
    return resume


def finish_output(out_dir: Path, record: dict) -> None:
    atomic_write_json(out_dir / RECORD, record)
    (out_dir / PROGRESS).unlink(missing_ok=True)
