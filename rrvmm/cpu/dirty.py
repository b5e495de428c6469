"""Dirty pages for several readers: landings, checkpoints, restores.

A backend's dirty log is cleared by every read, but several parts of rrvmm each need "pages
written since I last asked". Each read of the log is folded into one accumulator per
consumer. Backends subclass this and supply ``_read_log``.
"""

from __future__ import annotations

__all__ = ["DirtyAccumulators", "PAGE"]

PAGE = 4096


class DirtyAccumulators:
    def __init__(self) -> None:
        self._acc: dict[str, int] = {}  # consumer -> pages written since it last took

    def _read_log(self) -> int:
        """Pages written since the last read (bit n = page n of the RAM buffer); clears."""
        raise NotImplementedError

    def fetch_dirty(self) -> None:
        """Read (and so clear) the log into every consumer's accumulator."""
        bits = self._read_log()
        if bits:
            for name in self._acc:
                self._acc[name] |= bits

    def mark_dirty(self, host_offset: int, size: int) -> None:
        """A write rrvmm performed on the guest's behalf."""
        first, last = host_offset // PAGE, (host_offset + size - 1) // PAGE
        bits = ((1 << (last - first + 1)) - 1) << first
        for name in self._acc:
            self._acc[name] |= bits

    def take_dirty(self, consumer: str) -> int:
        """Pages written since ``consumer`` last took (a new consumer starts empty)."""
        if consumer not in self._acc:
            self._acc[consumer] = 0
        self.fetch_dirty()
        bits = self._acc[consumer]
        self._acc[consumer] = 0
        return bits

    def accumulators(self) -> dict[str, int]:
        self.fetch_dirty()
        return dict(self._acc)

    def set_accumulators(self, acc: dict[str, int]) -> None:
        """Replace the accumulators (checkpoint restore), discarding the pending log."""
        self.fetch_dirty()
        self._acc = dict(acc)
