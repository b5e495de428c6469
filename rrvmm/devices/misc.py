"""Ports that must exist on a PC but do nothing: the POST/delay port and absent PCI config.

Both read all ones at every size, like a floating bus (and like QEMU's port 0x80), and ignore
writes; they are mapped so accesses count as handled rather than as unknown ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrvmm.devices.isa import all_ones

__all__ = ["PciConfigAbsent", "PostPort", "SilentState"]


@dataclass
class SilentState:
    """Empty: these devices remember nothing."""


class _Silent:
    def __init__(self) -> None:
        self.state = SilentState()

    def pio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        return None

    def mmio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None


class PostPort(_Silent):
    """Port 0x80: POST codes and the classic I/O delay (``outb %al, $0x80``)."""


class PciConfigAbsent(_Silent):
    """Ports 0xcf8-0xcff (length 8): no host bridge, so even CONFIG_ADDRESS reads all ones.

    Linux's pci_check_type1 writes 0x80000000 to 0xcf8 and expects to read it back; reading
    all ones tells it there is no PCI configuration mechanism at all.
    """
