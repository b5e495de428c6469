"""Progress lines on a terminal for long operations (pack, timeline, diff)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "progress_for"]


class Progress:
    """A one-line progress display on a terminal: ``label 42% (detail)``, redrawn at most
    every ``interval`` seconds and only once the operation has taken ``delay`` seconds."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        unit: str = "",
        delay: float = 0.5,
        interval: float = 0.2,
    ) -> None:
        self.label = label
        self.stream = stream
        self.unit = unit
        self.delay = delay
        self.interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._start < self.delay or now - self._last < self.interval:
            return
        self._last = now
        pct = f"{100 * done // total:3d}%" if total > 0 else "   ?"
        if self.unit == "bytes":
            detail = f"{_size(done)} of {_size(total)}"
        else:
            detail = f"{self.unit} {done} of {total}".strip()
        self.stream.write(f"\r\033[Krrvmm: {self.label} {pct} ({detail})")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def progress_for(label: str, unit: str = "", stream: TextIO | None = None) -> Progress | None:
    """A Progress on stderr if it is a terminal, else None (quiet in pipes and files)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Progress(label, stream, unit=unit) if tty else None
