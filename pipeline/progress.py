"""Progress of long loops: a live bar on a terminal, sparse lines anywhere else.

On a terminal this is tqdm. When stderr is not one (CI logs, `make demo > log`), a bar's
carriage-return updates pile up into megabytes of text, so the loop prints one plain line
every `LINE_SECONDS` seconds or `LINE_FRACTION` of the loop, whichever comes first (but at
most one a `MIN_SECONDS`), and one when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LINE_SECONDS = 10.0
LINE_FRACTION = 0.05
MIN_SECONDS = 2.0


class _Lines:
    """tqdm's interface as used here (iterate, set_postfix, close), printing sparse lines."""

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None, initial: int, unit: str):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.start = initial, "", time.time()
        self.last_time, self.last_n, self.closed = self.start, initial, False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            self._maybe_print()
        self.close()

    def set_postfix(self, values: dict[str, Any], refresh: bool = True) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> str:
        spent = time.time() - self.start
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}s{share}, {spent:.0f} s{tail}"

    def _maybe_print(self) -> None:
        now = time.time()
        step = max(1, int(self.total * LINE_FRACTION)) if self.total else None
        since = now - self.last_time
        if since >= LINE_SECONDS or (step and self.n - self.last_n >= step and since >= MIN_SECONDS):
            print(self._line(), file=sys.stderr, flush=True)
            self.last_time, self.last_n = now, self.n

    def close(self) -> None:
        if not self.closed and self.n != self.last_n:
            print(self._line(), file=sys.stderr, flush=True)
        self.closed = True


def progress(iterable: Iterable[T], desc: str, total: int | None = None, initial: int = 0, unit: str = "it",
             leave: bool = True, disable: bool = False) -> Any:
    """`tqdm(iterable, ...)` on a terminal, sparse plain lines elsewhere (see the module's text)."""
    if disable:
        return tqdm(iterable, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=leave)
    return _Lines(iterable, desc, total, initial, unit)
