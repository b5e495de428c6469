"""Fixtures for device tests: a settable clock, an IRQ recorder, and port I/O through a Bus."""

from __future__ import annotations

from typing import Any

import pytest

from rrvmm.devices.bus import Bus


class FakeClock:
    """``now_ns()`` returns ``t``; tests move ``t`` by hand."""

    def __init__(self, t: int = 0) -> None:
        self.t = t

    def now_ns(self) -> int:
        return self.t


class IrqLog:
    """An IrqLine sink that records every (line, level) call."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bool]] = []

    def __call__(self, line: int, level: bool) -> None:
        self.events.append((line, level))

    def rising(self, line: int) -> int:
        """How many low-to-high transitions ``line`` made."""
        count = 0
        level = False
        for ln, lv in self.events:
            if ln == line:
                count += lv and not level
                level = lv
        return count

    def level(self, line: int) -> bool:
        levels = [lv for ln, lv in self.events if ln == line]
        return levels[-1] if levels else False


class Ports:
    """inb/outb/inw/outw at real port numbers, resolved through a Bus as the run loop does."""

    def __init__(self) -> None:
        self.bus = Bus()

    def _resolve(self, port: int) -> tuple[Any, int]:
        hit = self.bus.resolve(port)
        assert hit is not None, f"port {port:#x} unmapped"
        return hit

    def read(self, port: int, size: int) -> int:
        dev, off = self._resolve(port)
        return dev.pio_read(off, size)

    def write(self, port: int, size: int, value: int) -> None:
        dev, off = self._resolve(port)
        dev.pio_write(off, size, value)

    def inb(self, port: int) -> int:
        return self.read(port, 1)

    def outb(self, port: int, value: int) -> None:
        self.write(port, 1, value)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def irqlog() -> IrqLog:
    return IrqLog()


@pytest.fixture
def ports() -> Ports:
    return Ports()
