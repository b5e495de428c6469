"""8259A pair: Linux's init sequence, masking, priority, cascade, EOI, spurious vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.pic import Pic8259Pair

if TYPE_CHECKING:
    from conftest import Ports

M_CMD, M_DATA, S_CMD, S_DATA, ELCR0, ELCR1 = 0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1


class Pics:
    def __init__(self, ports: Ports) -> None:
        self.pic = Pic8259Pair()
        ports.bus.insert(self.pic, 0x20, 2, offset=0)
        ports.bus.insert(self.pic, 0xA0, 2, offset=2)
        ports.bus.insert(self.pic, 0x4D0, 2, offset=4)
        self.inb = ports.inb
        self.outb = ports.outb

    def linux_init(self, auto_eoi: bool = False) -> None:
        """arch/x86/kernel/i8259.c:init_8259A()."""
        outb = self.outb
        outb(M_DATA, 0xFF)
        outb(S_DATA, 0xFF)
        outb(M_CMD, 0x11)  # ICW1: edge, cascade, ICW4 follows
        outb(M_DATA, 0x20)  # ICW2: vectors 0x20-0x27
        outb(M_DATA, 0x04)  # ICW3: slave on IR2
        outb(M_DATA, 0x03 if auto_eoi else 0x01)  # ICW4: 8086 (+ AEOI)
        outb(S_CMD, 0x11)
        outb(S_DATA, 0x28)
        outb(S_DATA, 0x02)
        outb(S_DATA, 0x01)
        outb(M_DATA, 0x00)  # unmask everything for the tests
        outb(S_DATA, 0x00)

    def isr(self, cmd: int) -> int:
        self.outb(cmd, 0x0B)
        value = self.inb(cmd)
        self.outb(cmd, 0x0A)
        return value

    def irr(self, cmd: int) -> int:
        self.outb(cmd, 0x0A)
        return self.inb(cmd)

    def edge(self, line: int) -> None:
        self.pic.set_irq(line, True)
        self.pic.set_irq(line, False)


@pytest.fixture
def pics(ports: Ports) -> Pics:
    p = Pics(ports)
    p.linux_init()
    return p


def test_power_on_is_uninitialized() -> None:
    pic = Pic8259Pair()
    assert not pic.has_interrupt()
    pic.set_irq(1, True)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 1  # vector base 0, nothing masked


def test_probe_reads_back_mask(pics: Pics) -> None:
    pics.outb(S_DATA, 0xFF)
    pics.outb(M_DATA, 0xFB)
    assert pics.inb(M_DATA) == 0xFB
    assert pics.inb(S_DATA) == 0xFF


def test_timer_interrupt_and_eoi(pics: Pics) -> None:
    pics.edge(0)
    assert pics.irr(M_CMD) == 0x01
    assert pics.pic.pending_vector() == 0x20
    assert pics.pic.has_interrupt()
    assert pics.pic.acknowledge() == 0x20
    assert pics.isr(M_CMD) == 0x01
    assert pics.irr(M_CMD) == 0x00
    assert not pics.pic.has_interrupt()
    pics.edge(0)  # same line again: blocked by its own ISR bit
    assert not pics.pic.has_interrupt()
    pics.outb(M_CMD, 0x20)  # non-specific EOI
    assert pics.isr(M_CMD) == 0
    assert pics.pic.acknowledge() == 0x20


def test_edge_needs_a_new_rising_edge(pics: Pics) -> None:
    pics.pic.set_irq(4, True)
    assert pics.pic.acknowledge() == 0x24
    pics.outb(M_CMD, 0x20)
    pics.pic.set_irq(4, True)  # still high: no new edge
    assert not pics.pic.has_interrupt()
    pics.pic.set_irq(4, False)
    pics.pic.set_irq(4, True)
    assert pics.pic.acknowledge() == 0x24


def test_masking_keeps_the_request(pics: Pics) -> None:
    pics.outb(M_DATA, 0x10)
    pics.edge(4)
    assert not pics.pic.has_interrupt()
    assert pics.irr(M_CMD) == 0x10
    pics.outb(M_DATA, 0x00)
    assert pics.pic.acknowledge() == 0x24


@pytest.mark.parametrize(
    ("raised", "order"),
    [
        ((3, 1), [0x21, 0x23]),
        ((7, 0, 4), [0x20, 0x24, 0x27]),
        ((12, 3), [0x2C, 0x23]),  # the slave sits at IR2's priority
        ((15, 8), [0x28, 0x2F]),
    ],
)
def test_priority_order(pics: Pics, raised: tuple[int, ...], order: list[int]) -> None:
    for line in raised:
        pics.edge(line)
    got = []
    while pics.pic.has_interrupt():
        got.append(pics.pic.acknowledge())
        # EOI like Linux's mask_and_ack: specific EOI to the slave, then to the master
        vec = got[-1]
        if vec >= 0x28:
            pics.outb(S_CMD, 0x60 + (vec - 0x28))
            pics.outb(M_CMD, 0x62)
        else:
            pics.outb(M_CMD, 0x60 + (vec - 0x20))
    assert got == order


def test_higher_priority_preempts_in_service(pics: Pics) -> None:
    pics.edge(3)
    assert pics.pic.acknowledge() == 0x23
    pics.edge(5)
    assert not pics.pic.has_interrupt()  # lower than IR3 in service
    pics.edge(1)
    assert pics.pic.acknowledge() == 0x21  # higher: nests
    assert pics.isr(M_CMD) == 0x0A
    pics.outb(M_CMD, 0x20)  # EOI clears the highest in service: IR1
    assert pics.isr(M_CMD) == 0x08
    pics.outb(M_CMD, 0x20)
    assert pics.pic.acknowledge() == 0x25


def test_cascade(pics: Pics) -> None:
    pics.edge(12)
    assert pics.irr(S_CMD) == 0x10
    assert pics.irr(M_CMD) == 0x04
    assert pics.pic.acknowledge() == 0x2C
    assert pics.isr(S_CMD) == 0x10
    assert pics.isr(M_CMD) == 0x04
    pics.edge(9)  # higher than IRQ12 on the slave, so the slave asserts INT again...
    assert pics.irr(M_CMD) == 0x04
    assert not pics.pic.has_interrupt()  # ...but the master has IR2 itself in service
    pics.outb(S_CMD, 0x20)
    pics.outb(M_CMD, 0x20)
    assert pics.pic.acknowledge() == 0x29


def test_cascade_masked_on_master(pics: Pics) -> None:
    pics.outb(M_DATA, 0x04)
    pics.edge(8)
    assert not pics.pic.has_interrupt()
    pics.outb(M_DATA, 0x00)
    assert pics.pic.acknowledge() == 0x28


def test_spurious_master(pics: Pics) -> None:
    assert pics.pic.pending_vector() is None
    assert pics.pic.acknowledge() == 0x27
    assert pics.isr(M_CMD) == 0  # a spurious IRQ7 sets no ISR bit


def test_spurious_slave(pics: Pics) -> None:
    pics.edge(12)  # master IR2 latched
    pics.outb(S_DATA, 0x10)  # then masked on the slave before INTA
    assert pics.pic.has_interrupt()
    assert pics.pic.acknowledge() == 0x2F
    assert pics.isr(S_CMD) == 0
    assert pics.isr(M_CMD) == 0x04  # the master still needs its EOI


def test_auto_eoi(ports: Ports) -> None:
    p = Pics(ports)
    p.linux_init(auto_eoi=True)
    p.edge(0)
    assert p.pic.acknowledge() == 0x20
    assert p.isr(M_CMD) == 0
    p.edge(0)
    assert p.pic.acknowledge() == 0x20  # no EOI needed


def test_specific_eoi_and_rotation(pics: Pics) -> None:
    pics.edge(1)
    pics.edge(3)
    assert pics.pic.acknowledge() == 0x21
    assert not pics.pic.has_interrupt()  # IR3 waits behind IR1 in service
    pics.outb(M_CMD, 0x61)  # specific EOI for IR1
    assert pics.isr(M_CMD) == 0
    assert pics.pic.acknowledge() == 0x23
    pics.outb(M_CMD, 0xA0)  # rotate on non-specific EOI: IR3 becomes lowest
    pics.edge(3)
    pics.edge(5)
    assert pics.pic.acknowledge() == 0x25
    pics.outb(M_CMD, 0xC7)  # set priority: IR7 lowest again (IR0 highest)
    pics.outb(M_CMD, 0x20)  # EOI for IR5
    pics.edge(0)
    assert pics.pic.acknowledge() == 0x20  # IR0 beats the waiting IR3 again


def test_poll_mode(pics: Pics) -> None:
    pics.outb(M_CMD, 0x0C)
    assert pics.inb(M_CMD) == 0  # nothing pending
    pics.edge(6)
    pics.outb(M_CMD, 0x0C)
    assert pics.inb(M_CMD) == 0x86
    assert pics.isr(M_CMD) == 0x40


def test_elcr_level_triggered(pics: Pics) -> None:
    pics.outb(ELCR0, 0xFF)
    pics.outb(ELCR1, 0xFF)
    assert pics.inb(ELCR0) == 0xF8  # IRQ0-2 cannot be level-triggered
    assert pics.inb(ELCR1) == 0xDE  # nor IRQ8 and IRQ13
    pics.pic.set_irq(5, True)
    assert pics.pic.acknowledge() == 0x25
    pics.outb(M_CMD, 0x20)
    assert pics.pic.has_interrupt()  # the line is still high: requested again
    pics.pic.set_irq(5, False)
    assert not pics.pic.has_interrupt()


def test_level_slave_line_dropping_early_is_spurious(pics: Pics) -> None:
    pics.outb(ELCR1, 0x04)  # IRQ10 level-triggered
    pics.pic.set_irq(10, True)
    assert pics.pic.acknowledge() == 0x2A
    pics.outb(S_CMD, 0x20)
    pics.outb(M_CMD, 0x20)
    assert pics.pic.pending_vector() == 0x2A  # still high: requested again
    pics.pic.set_irq(10, False)
    # master IR2 latched the slave's edge; the slave has nothing left: IRQ15 as on hardware
    assert pics.pic.acknowledge() == 0x2F


def test_irq_line_sink(pics: Pics) -> None:
    com1 = IrqLine(4, pics.pic.set_irq)
    com1.set(True)
    assert pics.pic.acknowledge() == 0x24


def test_cascade_line_rejected(pics: Pics) -> None:
    with pytest.raises(ValueError):
        pics.pic.set_irq(2, True)
    with pytest.raises(ValueError):
        pics.pic.set_irq(16, True)


def test_reinit_clears_state(pics: Pics) -> None:
    pics.edge(5)
    pics.pic.acknowledge()
    pics.linux_init()
    assert pics.isr(M_CMD) == 0
    assert pics.irr(M_CMD) == 0


def test_reset_keeps_wire_levels(pics: Pics) -> None:
    pics.pic.set_irq(4, True)
    pics.pic.reset()
    assert pics.pic.pending_vector() is None
    pics.pic.set_irq(4, True)  # still the same high level: no edge
    assert not pics.pic.has_interrupt()
    pics.pic.set_irq(4, False)
    pics.pic.set_irq(4, True)
    assert pics.pic.acknowledge() == 4  # uninitialized: vector base 0
