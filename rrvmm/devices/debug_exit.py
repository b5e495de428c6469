"""QEMU's isa-debug-exit (port 0xf4): lets a test guest end the run with a status.

QEMU exits with ``(V << 1) | 1``; rrvmm hands ``V`` itself to ``on_exit`` and the command line
exits with it, as the machine contract says.  With ``qemu_status=True`` (the option that also
brings pc-testdev, for kvm-unit-tests, whose runner maps QEMU's status 1 to PASS) ``on_exit``
gets QEMU's ``(V << 1) | 1`` instead; the process exit status keeps its low 8 bits either way.
The write is taken at any offset and size so a guest may use ``outb``, ``outw`` or ``outl``.
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
    """Calls ``on_exit(V)`` (or QEMU's status for ``V``) for a port write; reads all ones."""

    def __init__(self, on_exit: Callable[[int], None], *, qemu_status: bool = False) -> None:
        self._on_exit = on_exit
        self._qemu_status = qemu_status
        self.state = DebugExitState()

    def pio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= all_ones(size)
        self._on_exit((value << 1) | 1 if self._qemu_status else value)

    def mmio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None
