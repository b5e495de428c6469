"""QEMU's isa-debug-exit (port 0xf4): lets a test guest end the run with a status.

QEMU exits with ``(V << 1) | 1``; rrvmm hands ``V`` itself to ``on_exit`` and the command line
exits with it, as the machine contract says.  The write is taken at any offset and size so a
guest may use ``outb``, ``outw`` or ``outl``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rrvmm.devices.isa import all_ones

__all__ = ["DebugExit", "DebugExitState"]


@dataclass
class DebugExitState:
    """Empty: the device has no memory, the exit itself is the run loop's business."""


class DebugExit:
    """Calls ``on_exit(V)`` for a port write of ``V``; reads return all ones."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit
        self.state = DebugExitState()

    def pio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value & all_ones(size))

    def mmio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None
