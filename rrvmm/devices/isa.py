"""How port accesses wider than a byte reach the 8-bit register files of ISA devices.

A PC's ISA bridge splits a 16- or 32-bit cycle to an 8-bit device into byte cycles at
successive ports, so ``inw(0x3f8)`` reads RBR then IER.  Modelling that once here keeps every
device's register code byte-sized.  The split never leaves the contiguous window the first
byte falls in: a device owning disjoint ranges (the PIC at 0x20 and 0xa0, the i8042 at 0x60 and
0x64) sees its offsets packed together, and the byte after a window's end belongs to some other
port, which reads as all ones here (a floating bus) and ignores writes.
"""

from __future__ import annotations

__all__ = ["ByteRegisters", "all_ones"]


def all_ones(size: int) -> int:
    """The value a read of ``size`` bytes from nowhere returns (a floating ISA bus)."""
    return (1 << (8 * size)) - 1


class ByteRegisters:
    """Mixin giving the ``Device`` protocol's four methods on top of ``read8``/``write8``.

    ``windows`` lists the contiguous offset ranges ``[start, end)`` the device decodes.
    Port-mapped only: ISA devices do not answer memory cycles, so MMIO reads all ones.
    """

    windows: tuple[tuple[int, int], ...] = ((0, 1),)

    def read8(self, offset: int) -> int:
        raise NotImplementedError

    def write8(self, offset: int, value: int) -> None:
        raise NotImplementedError

    def _window_end(self, offset: int) -> int:
        for start, end in self.windows:
            if start <= offset < end:
                return end
        return offset

    def pio_read(self, offset: int, size: int) -> int:
        end = self._window_end(offset)
        value = 0
        for i in range(size):
            byte = self.read8(offset + i) & 0xFF if offset + i < end else 0xFF
            value |= byte << (8 * i)
        return value

    def pio_write(self, offset: int, size: int, value: int) -> None:
        end = self._window_end(offset)
        for i in range(size):
            if offset + i < end:
                self.write8(offset + i, (value >> (8 * i)) & 0xFF)

    def mmio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        return None
