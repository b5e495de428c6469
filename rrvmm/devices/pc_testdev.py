"""QEMU's pc-testdev: the ISA test device kvm-unit-tests' x86 tests drive.

Modelled from QEMU's hw/misc/pc-testdev.c (read, not copied) and from what the tests do with
it: ``realmode`` and ``emulator`` read back what they wrote to port 0xe0 at every width and
through string I/O, ``ioapic`` raises and lowers interrupt lines through ports 0x2000+, and
``eventinj`` writes page addresses to port 0xe4.

Device offsets (one device, three port windows and a memory window; the machine maps):
- ports 0xe0-0xe3 -> offsets 0x00-0x03: a 32-bit scratch register.  An access of N bytes at
  offset ``a`` touches bytes ``a .. a+N-1``; like QEMU, a misaligned access (a word at
  0xe1, a dword at 0xe2) is refused: reads 0, writes ignored.
- ports 0xe4-0xe7 -> offsets 0x04-0x07: "flush page".  A 32-bit write hands the page
  address (value & ~0xfff) to ``flush_page``; QEMU mprotects the host page to drop KVM's
  mappings of it, so for a guest it has no visible effect.  Reads return 0.
- ports 0xe8-0xeb -> offsets 0x08-0x0b: the same scratch register, byte-addressed, so an
  access of any width is split into byte accesses (QEMU's "ioport-byte" region).
- ports 0x2000-0x2017 -> offsets 0x100-0x117: a byte write of V drives ISA interrupt line
  ``port - 0x2000`` to ``V != 0`` through ``set_irq(line, level)``; reads return 0.
- memory 0xff000000-0xff00ffff (``mmio_*``, offsets 0-0xffff): 64 KiB of scratch memory.
Other widths than QEMU accepts are logged once and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "IOMEM_BASE",
    "IOMEM_SIZE",
    "IRQ_PORT_BASE",
    "IRQ_PORT_COUNT",
    "IRQ_PORT_OFFSET",
    "PcTestdev",
    "PcTestdevState",
    "TESTDEV_PORT_BASE",
    "TESTDEV_PORT_COUNT",
]

log = logging.getLogger("rrvmm")

TESTDEV_PORT_BASE = 0xE0
TESTDEV_PORT_COUNT = 12  # 0xe0-0xeb
IRQ_PORT_BASE = 0x2000
IRQ_PORT_COUNT = 24
IRQ_PORT_OFFSET = 0x100  # where the 0x2000 window starts in the device's offsets
IOMEM_BASE = 0xFF000000
IOMEM_SIZE = 0x10000

_SCRATCH = 0x00
_FLUSH = 0x04
_SCRATCH_BYTES = 0x08


@dataclass
class PcTestdevState:
    scratch: int = 0
    iomem: bytes = field(default_factory=lambda: bytes(IOMEM_SIZE))


class PcTestdev:
    """``set_irq(line, level)`` drives ISA lines; ``flush_page(addr)`` is told of 0xe4 writes."""

    def __init__(
        self,
        set_irq: Callable[[int, bool], None],
        flush_page: Callable[[int], None] | None = None,
    ) -> None:
        self._set_irq = set_irq
        self._flush_page = flush_page or (lambda addr: None)
        self._logged: set[str] = set()
        self.state = PcTestdevState()

    def reset(self) -> None:
        self.state = PcTestdevState()

    # -- the scratch register ----------------------------------------------------------------

    def _scratch_read(self, byte: int, size: int) -> int:
        return (self.state.scratch >> (8 * byte)) & ((1 << (8 * size)) - 1)

    def _scratch_write(self, byte: int, size: int, value: int) -> None:
        mask = ((1 << (8 * size)) - 1) << (8 * byte)
        s = self.state
        s.scratch = (s.scratch & ~mask | (value << (8 * byte)) & mask) & 0xFFFFFFFF

    def _aligned(self, offset: int, size: int) -> bool:
        ok = size in (1, 2, 4) and (offset & 3) % size == 0 and (offset & 3) + size <= 4
        if not ok:
            self._log_once(f"a{offset}:{size}", f"pc-testdev: {size}-byte access at +{offset:#x}")
        return ok

    # -- ports ---------------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        if offset < _FLUSH:
            return self._scratch_read(offset, size) if self._aligned(offset, size) else 0
        if offset < _SCRATCH_BYTES:
            return 0
        if offset < TESTDEV_PORT_COUNT:
            value = 0
            for i in range(size):
                value |= self._scratch_read((offset + i) & 3, 1) << (8 * i)
            return value
        return 0  # the IRQ ports read 0

    def pio_write(self, offset: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        if offset < _FLUSH:
            if self._aligned(offset, size):
                self._scratch_write(offset, size, value)
        elif offset < _SCRATCH_BYTES:
            if offset == _FLUSH and size == 4:
                self._flush_page(value & ~0xFFF)
            else:
                self._log_once("flush", f"pc-testdev: {size}-byte flush-page write ignored")
        elif offset < TESTDEV_PORT_COUNT:
            for i in range(size):
                self._scratch_write((offset + i) & 3, 1, (value >> (8 * i)) & 0xFF)
        elif IRQ_PORT_OFFSET <= offset < IRQ_PORT_OFFSET + IRQ_PORT_COUNT:
            if size == 1:
                self._set_irq(offset - IRQ_PORT_OFFSET, value != 0)
            else:
                self._log_once("irq", f"pc-testdev: {size}-byte IRQ-line write ignored")

    # -- the memory window ---------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        end = min(offset + size, IOMEM_SIZE)
        return int.from_bytes(self.state.iomem[offset:end], "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        end = min(offset + size, IOMEM_SIZE)
        if offset >= end:
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")[: end - offset]
        mem = self.state.iomem
        self.state.iomem = mem[:offset] + data + mem[end:]

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)
