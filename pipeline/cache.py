"""The stage cache: a key per stage from its inputs, a record written last, a lock.

A stage's key hashes its parts: its config section ("settings"), its upstream
stages' keys ("upstream"), a sha256 per file of the code it runs ("code": the
project modules its entry module imports, transitively, and the C sources they
build; see `pipeline/codedeps.py`) and any external input such as the scene
files ("external"). Its output folder counts as done only when `record.json`
exists, holds the same key, and the files it lists ("output_files") are still
there; the record is written after every other output, so a crash at any
point leaves the stage "stale" or "missing", never "done". The record keeps
the key's parts, so `explain` can say which of them changed, as `dvc status`
does.
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
PREVIOUS = ".previous"  # suffix of the folder that keeps a stage's last finished outputs during a re-run


def read_record(out_dir: Path) -> dict | None:
    """The stage's record, or None if absent or not a valid record (never an error:
    an unreadable record only means the stage is not done)."""
    try:
        rec = json.loads((out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def stage_state(out_dir: Path, key: str) -> str:
    """'done' (record with this key, outputs in place), 'stale' (record with another key,
    or outputs gone since) or 'missing' (no valid record)."""
    rec = read_record(out_dir)
    if rec is None:
        return "missing"
    return "done" if rec.get("key") == key and not _output_changes(out_dir, rec) else "stale"


def explain(out_dir: Path, key: str, parts: dict) -> tuple[str, list[str]]:
    """`stage_state` and, unless done, the reasons: which of the key's `parts` (as
    `stages.Pipeline.key_parts` gives them) differ from the record's, or which
    outputs are gone."""
    rec = read_record(out_dir)
    if rec is None:
        return "missing", _why_missing(out_dir, key)
    if rec.get("key") == key:
        changes = _output_changes(out_dir, rec)
        return ("stale" if changes else "done"), changes
    if any(part not in rec for part in parts):
        return "stale", ["recorded before records kept the key's parts; run it again to record them"]
    reasons = [f"setting {k}: {_short(old)} -> {_short(new)}"
               for k, old, new in _dict_changes(rec["settings"], parts["settings"])]
    old_up, new_up = rec["upstream"], parts["upstream"]
    reasons += [f"upstream stage '{u}' changed" for u in new_up if old_up.get(u) != new_up[u]]
    old_code, new_code = rec["code"], parts["code"]
    reasons += [f"code changed: {path}" if path in old_code and path in new_code else
                f"code added: {path}" if path in new_code else f"code no longer used: {path}"
                for path in sorted(old_code.keys() | new_code.keys()) if old_code.get(path) != new_code.get(path)]
    if rec["external"] != parts["external"]:
        reasons.append("input data changed")
    reasons += _output_changes(out_dir, rec)
    # equal parts under another key: the key's recipe itself changed (a new version of the cache)
    return "stale", reasons or ["key computed differently by this version of the pipeline"]


def _why_missing(out_dir: Path, key: str) -> list[str]:
    if (out_dir / RECORD).exists():
        return [f"{RECORD} is unreadable"]
    try:
        progress = json.loads((out_dir / PROGRESS).read_text())
    except (OSError, ValueError):
        progress = None
    if isinstance(progress, dict):
        if progress.get("key") == key:
            return ["outputs incomplete: interrupted; the next run resumes"]
        return ["outputs incomplete: interrupted with other inputs; the next run starts over"]
    if out_dir.is_dir() and any(c.name != LOCK for c in out_dir.iterdir()):
        return ["outputs incomplete: no record"]
    return ["never run"]


def _dict_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two nested dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(prefix or "(all)", old, new)]
    out = []
    for k in [*old, *(k for k in new if k not in old)]:
        name = f"{prefix}.{k}" if prefix else str(k)
        if k not in new:
            out.append((name, old[k], "(absent)"))
        elif k not in old:
            out.append((name, "(absent)", new[k]))
        else:
            out += _dict_changes(old[k], new[k], name)
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) or value == "" else value
    return text if len(text) <= limit else text[:limit - 3] + "..."


def output_files(out_dir: Path) -> dict[str, dict[str, int]]:
    """What the stage left in its folder: each top-level file's size in bytes, each
    folder's number of files. Kept in the record, so a deleted or truncated output
    makes the stage stale instead of failing its downstream."""
    manifest: dict[str, dict[str, int]] = {}
    for child in sorted(out_dir.iterdir()):
        if child.name.startswith(".") or child.name == RECORD:
            continue  # lock, progress and temporary files are not outputs
        if child.is_dir():
            manifest[child.name + "/"] = {"files": _count_files(child)}
        elif child.is_file():
            manifest[child.name] = {"bytes": child.stat().st_size}
    return manifest


def _count_files(folder: Path) -> int:
    return sum(1 for _, _, names in os.walk(folder) for n in names if not n.startswith("."))


def _output_changes(out_dir: Path, rec: dict) -> list[str]:
    """Outputs listed in the record that are gone or changed size (older records list none)."""
    changes = []
    for name, want in (rec.get("output_files") or {}).items():
        path = out_dir / name
        if name.endswith("/"):
            if not path.is_dir():
                changes.append(f"output missing: {name}")
            elif (have := _count_files(path)) < want.get("files", 0):
                changes.append(f"outputs incomplete: {name} holds {have} of {want['files']} files")
        elif not path.is_file():
            changes.append(f"output missing: {name}")
        elif path.stat().st_size != want.get("bytes"):
            changes.append(f"output changed: {name} ({want.get('bytes')} -> {path.stat().st_size} bytes)")
    return changes


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


def previous_dir(out_dir: Path) -> Path:
    """Where a stage's last finished outputs wait while a run with another key replaces them."""
    return out_dir.with_name(out_dir.name + PREVIOUS)


def prepare_output(out_dir: Path, key: str, force: bool) -> bool:
    """Get `out_dir` ready for a run with `key`; return True if partial outputs of an
    interrupted run with the same key are kept for resuming.

    Outputs of other settings (or everything, with force) leave the folder: they must not
    leak into this run. Finished ones (a record) move to `previous_dir` until this run
    finishes, so a run that is stopped or fails does not cost the last finished result
    (a 20-minute teacher, say, after an edit made it stale); unfinished ones are removed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / RECORD).exists():
        keep = previous_dir(out_dir)
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir()
        for child in out_dir.iterdir():
            if child.name not in (LOCK, PROGRESS):
                child.rename(keep / child.name)
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
    atomic_write_json(out_dir / RECORD, {**record, "output_files": output_files(out_dir)})
    (out_dir / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(previous_dir(out_dir), ignore_errors=True)  # replaced: no longer needed
