"""Crash-safe file output: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file under its final name, so a stage
killed at any moment leaves only complete outputs (plus stray *.tmp files
that the next run ignores and overwrites).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import StageError

# mkstemp creates files readable by their owner only; outputs (site files served by a web
# server running as another user, among others) get the usual permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_uint8(img: torch.Tensor):
    """(..., 3) float image in [0, 1] -> numpy uint8, rounded to nearest."""
    return (img.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype("uint8")


def png_bytes(img: torch.Tensor) -> bytes:
    """(H, W, 3) float image in [0, 1] -> 8-bit PNG file contents (`to_uint8` rounding)."""
    import imageio.v3 as iio  # here, not at the top: most users of this module write no images

    return iio.imwrite("<bytes>", to_uint8(img), extension=".png")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file another stage wrote; a missing or torn one is a one-line error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise StageError(f"{path}: missing or unreadable ({err.__class__.__name__}); re-run the stage that "
                         "writes it with --force") from None


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def hash_files(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over (relative name, content) of files, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(paths):
        name = str(p.relative_to(root)) if root else p.name
        h.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
