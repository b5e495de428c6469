"""The APIC devices wired together as the machine will wire them, with the real 8259 pair.

ISA IRQ n drives both the 8259 and I/O APIC pin n, except IRQ 0 which lands on pin 2 (the
MADT's override); the I/O APIC's messages go to the local APIC that matches them; the local
APIC's EOI broadcast goes back to the I/O APIC.  The CPU is played by ``take``.
"""

from __future__ import annotations

from rrvmm.devices.ioapic import ApicMessage, IoApic
from rrvmm.devices.lapic import LocalApic
from rrvmm.devices.pic import Pic8259Pair


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t


class Board:
    def __init__(self) -> None:
        self.clock = Clock()
        self.pic = Pic8259Pair()
        self.ioapic = IoApic(self._route)
        self.lapic = LocalApic(self.clock, extint=self.pic, eoi_broadcast=self.ioapic.eoi)

    def _route(self, msg: ApicMessage) -> None:
        if self.lapic.matches(msg.dest, msg.logical):
            self.lapic.deliver(msg.vector, msg.delivery_mode, msg.trigger_level)

    def isa_irq(self, irq: int, level: bool) -> None:
        if irq != 2:
            self.pic.set_irq(irq, level)
        self.ioapic.set_irq(2 if irq == 0 else irq, level)

    def take(self) -> int | None:
        """What the CPU does with IF=1: take one interrupt if INTR is asserted."""
        return self.lapic.acknowledge() if self.lapic.has_interrupt() else None

    def init_pic(self, mask: int) -> None:
        for port, value in ((0, 0x11), (1, 0x20), (1, 4), (1, 1), (2, 0x11), (3, 0x28), (3, 2)):
            self.pic.write8(port, value)
        self.pic.write8(3, 1)
        self.pic.write8(1, mask & 0xFF)
        self.pic.write8(3, mask >> 8)

    def route(self, pin: int, low: int, dest: int = 0) -> None:
        self.ioapic.mmio_write(0, 4, 0x11 + 2 * pin)
        self.ioapic.mmio_write(0x10, 4, dest << 24)
        self.ioapic.mmio_write(0, 4, 0x10 + 2 * pin)
        self.ioapic.mmio_write(0x10, 4, low)


def test_virtual_wire_mode_reaches_the_cpu_through_lint0() -> None:
    b = Board()
    b.init_pic(mask=0)
    b.isa_irq(0, True)
    b.isa_irq(0, False)
    assert b.take() == 0x20  # the 8259's vector, LAPIC untouched
    b.pic.write8(0, 0x20)
    assert b.take() is None


def test_symmetric_io_mode_pit_on_pin_2_and_a_level_source() -> None:
    b = Board()
    b.init_pic(mask=0xFFFF)  # what Linux does before switching to the I/O APIC
    b.lapic.mmio_write(0xF0, 4, 0x1FF)
    b.lapic.mmio_write(0x350, 4, 0x10700)  # LINT0 masked
    b.route(2, 0x30)  # PIT: edge
    b.route(10, 0x8000 | 0x2000 | 0x41)  # virtio: level, active low
    b.isa_irq(0, True)
    b.isa_irq(0, False)
    b.isa_irq(10, True)
    assert b.take() == 0x41  # higher class first
    assert b.take() is None  # 0x30 is below the one in service
    b.lapic.mmio_write(0xB0, 4, 0)  # EOI: broadcast, line still high -> sent again
    assert b.take() == 0x41
    b.isa_irq(10, False)  # the driver quiets the device
    b.lapic.mmio_write(0xB0, 4, 0)
    assert b.take() == 0x30
    b.lapic.mmio_write(0xB0, 4, 0)
    assert b.take() is None


def test_lapic_timer_interrupt_and_pic_side_by_side() -> None:
    b = Board()
    b.init_pic(mask=0xFFFE)  # only IRQ 0 through the 8259
    b.lapic.mmio_write(0xF0, 4, 0x1FF)
    b.lapic.mmio_write(0x3E0, 4, 0xB)
    b.lapic.mmio_write(0x320, 4, 0x20000 | 0xEC)
    b.lapic.mmio_write(0x380, 4, 1000)
    b.clock.t = 1000
    b.lapic.advance(b.clock.t)
    b.isa_irq(0, True)
    assert b.take() == 0x20  # ExtINT goes first
    assert b.take() == 0xEC
    assert b.lapic.next_deadline_ns() == 2000
