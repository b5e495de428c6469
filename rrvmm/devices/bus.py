"""Address-range bus: maps port or MMIO ranges to devices that only ever see offsets.

Devices never import the CPU backend; the run loop resolves an exit's address here and
calls the device with the offset inside its range, so a device can sit at any base.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Bus", "BusError", "Device", "IrqLine", "Clock"]


@runtime_checkable
class Device(Protocol):
    """A device model. Offsets are relative to the range it was inserted at.

    Its mutable state lives in ``self.state``, a dataclass of plain data (ints, bools,
    bytes, lists), so that checkpoints can copy it with ``snapshot``/``restore``.
    """

    def pio_read(self, offset: int, size: int) -> int: ...
    def pio_write(self, offset: int, size: int, value: int) -> None: ...
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class Clock(Protocol):
    """Guest-visible monotonic time in nanoseconds; a replay feeds it from the trace."""

    def now_ns(self) -> int: ...


class IrqLine:
    """One interrupt request line, bound to an interrupt controller input.

    ``sink`` is called with (line, level); edge-triggered controllers act on rising edges.
    """

    __slots__ = ("line", "_sink", "level")

    def __init__(self, line: int, sink: Callable[[int, bool], None]) -> None:
        self.line = line
        self._sink = sink
        self.level = False

    def set(self, level: bool) -> None:
        self.level = level
        self._sink(self.line, level)

    def pulse(self) -> None:
        self.set(True)
        self.set(False)


class BusError(ValueError):
    """A range that cannot be inserted (overlap or zero length)."""


@dataclass(frozen=True, slots=True)
class _Range:
    base: int
    length: int
    device: Any
    offset: int

    @property
    def end(self) -> int:
        return self.base + self.length


class Bus:
    """Sorted, non-overlapping ranges; ``resolve`` is a binary search."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._ranges: list[_Range] = []

    def insert(self, device: Any, base: int, length: int, offset: int = 0) -> None:
        """Map ``[base, base+length)`` to ``device``; it sees ``offset + (addr - base)``.

        ``offset`` lets one device own several disjoint ranges (the i8042 at 0x60 and 0x64).
        """
        if length <= 0:
            raise BusError(f"zero-length range at {base:#x}")
        i = bisect.bisect_right(self._bases, base)
        if i > 0 and self._ranges[i - 1].end > base:
            raise BusError(f"range {base:#x}+{length:#x} overlaps {self._ranges[i - 1].base:#x}")
        if i < len(self._ranges) and base + length > self._ranges[i].base:
            raise BusError(f"range {base:#x}+{length:#x} overlaps {self._ranges[i].base:#x}")
        self._bases.insert(i, base)
        self._ranges.insert(i, _Range(base, length, device, offset))

    def resolve(self, addr: int) -> tuple[Any, int] | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i < 0:
            return None
        r = self._ranges[i]
        if addr >= r.end:
            return None
        return r.device, addr - r.base + r.offset

    def devices(self) -> list[Any]:
        seen: list[Any] = []
        for r in self._ranges:
            if all(r.device is not d for d in seen):
                seen.append(r.device)
        return seen
