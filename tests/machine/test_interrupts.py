"""Interrupt routing: rrvmm's 8259 with injection, and the backend's own 8259 read raw.

The backend's controller is faked at its interface (``KernelIrqchip``: raw registers in,
line changes out), which is all ``KernelLines`` sees; the real one is exercised end to end
by tests/replay/test_kernel_irqchip.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from rrvmm.cpu.backend import PicRegisters, QueuedInterrupt
from rrvmm.devices.pic import Pic8259Pair
from rrvmm.machine.interrupts import (
    HALT_POLL_NS,
    LINE_RETRY_NS,
    KernelLines,
    UserPic,
    deliverable_vector,
    edge_taken_at_entry,
    line_vector,
    pending_vector,
)
from rrvmm.seam import Seam

_CLEAR = PicRegisters(*([0] * len(dataclasses.fields(PicRegisters))))


def chip_regs(irq_base: int, **fields: int) -> PicRegisters:
    return dataclasses.replace(_CLEAR, irq_base=irq_base, **fields)


MASTER, SLAVE = chip_regs(0x20), chip_regs(0x28)


class RecordingSeam(Seam):
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def on_irq_line(self, index: int, line: int, level: bool) -> None:
        self.log.append(("line", index, line, level))

    def on_inject(self, index: int, vector: int) -> None:
        self.log.append(("inject", index, vector))


class FakeChip:
    """A ``KernelIrqchip`` whose registers and vCPU events the test sets."""

    def __init__(self) -> None:
        self.regs = (MASTER, SLAVE)
        self.queued: QueuedInterrupt | None = QueuedInterrupt(False, 0, False)
        self.lines: list[tuple[int, bool]] = []
        self.is_halted = False

    def set_irq_line(self, line: int, level: bool) -> None:
        self.lines.append((line, level))

    def pic_registers(self) -> tuple[PicRegisters, PicRegisters]:
        return self.regs

    def queued_interrupt(self) -> QueuedInterrupt | None:
        return self.queued

    def halted(self) -> bool:
        return self.is_halted

    def halt(self) -> None:
        self.is_halted = True

    def at_hlt(self) -> bool:
        return False

    def lapic_timer_armed(self) -> bool:
        return False


# --- reading the backend's registers with rrvmm's 8259 model ---
@pytest.mark.parametrize(
    ("master", "raise_line", "vector"),
    [
        (MASTER, None, None),
        (chip_regs(0x20, irr=1 << 3), None, 0x23),
        (chip_regs(0x20, irr=1 << 3, imr=1 << 3), None, None),  # masked
        (chip_regs(0x20, irr=1 << 3, isr=1 << 1), None, None),  # IR1 in service
        (MASTER, 4, 0x24),
        (chip_regs(0x20, imr=1 << 4), 4, None),
        (chip_regs(0x20, last_irr=1 << 4), 4, 0x24),  # high already: the model pulses it
        (MASTER, 10, 0x2A),  # through the cascade
    ],
)
def test_pending_vector_from_raw_registers(
    master: PicRegisters, raise_line: int | None, vector: int | None
) -> None:
    assert pending_vector((master, SLAVE), raise_line) == vector


def test_the_model_and_the_registers_agree_on_vectors() -> None:
    assert line_vector((MASTER, SLAVE), 0) == 0x20
    assert line_vector((MASTER, SLAVE), 12) == 0x2C
    pair = Pic8259Pair()  # an uninitialised 8259 hands out vector base 0
    pair.set_irq(5, True)
    assert pending_vector((_CLEAR, _CLEAR), 5) == pair.pending_vector() == 5


@pytest.mark.parametrize(
    ("queued", "irr", "vector"),
    [
        (None, 1, None),  # IF clear
        (QueuedInterrupt(False, 0, True), 1, None),  # STI shadow
        (QueuedInterrupt(True, 0x31, False), 0, 0x31),  # acknowledged, queued by KVM
        (QueuedInterrupt(False, 0, False), 1, 0x20),  # pending in the PIC
        (QueuedInterrupt(False, 0, False), 0, None),
    ],
)
def test_deliverable_vector(queued: QueuedInterrupt | None, irr: int, vector: int | None) -> None:
    chip = FakeChip()
    chip.queued = queued
    chip.regs = (chip_regs(0x20, irr=irr), SLAVE)
    assert deliverable_vector(chip) == vector


@pytest.mark.parametrize(
    ("queued", "master", "taken"),
    [
        (QueuedInterrupt(False, 0, False), MASTER, True),
        (None, MASTER, False),  # IF clear: KVM would hold it pending
        (QueuedInterrupt(False, 0, True), MASTER, False),
        (QueuedInterrupt(True, 0x21, False), MASTER, False),  # one already on its way
        (QueuedInterrupt(False, 0, False), chip_regs(0x20, irr=1 << 1), False),
        (QueuedInterrupt(False, 0, False), chip_regs(0x20, imr=1), False),  # masked
        (QueuedInterrupt(False, 0, False), chip_regs(0x20, isr=1), False),  # IR0 in service
    ],
)
def test_an_edge_is_given_only_where_it_is_taken_at_entry(
    queued: QueuedInterrupt | None, master: PicRegisters, taken: bool
) -> None:
    chip = FakeChip()
    chip.queued = queued
    chip.regs = (master, SLAVE)
    assert edge_taken_at_entry(chip, 0) is taken


# --- the backend's 8259: line changes timed by rrvmm ---
def test_kernel_lines_hold_an_edge_until_the_guest_takes_it() -> None:
    chip, seam = FakeChip(), RecordingSeam()
    lines = KernelLines(chip, seam)
    chip.queued = None  # interrupts off
    lines.set_line(0, True)
    assert lines.deliver(1) is None
    assert chip.lines == [] and lines.pending() and lines.poll_ns() == LINE_RETRY_NS
    chip.queued = QueuedInterrupt(False, 0, False)
    lines.deliver(2)
    assert chip.lines == [(0, True)] and seam.log == [("line", 2, 0, True)]
    assert not lines.pending() and lines.poll_ns() == HALT_POLL_NS
    lines.set_line(0, False)  # lowering is handed over at once, whatever the guest does
    chip.queued = None
    lines.deliver(3)
    assert chip.lines[-1] == (0, False) and seam.log[-1] == ("line", 3, 0, False)


def test_a_pulse_within_one_exit_is_not_lost() -> None:
    chip, seam = FakeChip(), RecordingSeam()
    lines = KernelLines(chip, seam)
    lines.set_line(4, True)
    lines.set_line(4, False)
    lines.deliver(1)
    assert chip.lines == [(4, True), (4, False)]


def test_a_new_edge_on_a_line_kvm_holds_high_is_lowered_first() -> None:
    chip, seam = FakeChip(), RecordingSeam()
    lines = KernelLines(chip, seam)
    lines.set_line(1, True)
    lines.deliver(1)
    lines.set_line(1, False)
    lines.set_line(1, True)  # the device lowered and raised it between two entries
    lines.deliver(2)
    assert chip.lines == [(1, True), (1, False), (1, True)]
    assert seam.log == [("line", 1, 1, True), ("line", 2, 1, True)]


def test_kernel_lines_survive_a_snapshot() -> None:
    chip = FakeChip()
    lines = KernelLines(chip, RecordingSeam())
    chip.queued = None
    lines.set_line(3, True)
    lines.deliver(1)
    snap = lines.snapshot()
    other = KernelLines(FakeChip(), RecordingSeam())
    other.restore(snap)
    assert other.snapshot() == snap and other.edges == {3}
    assert lines.devices() == {}  # KVM's PIC travels with the vCPU state


# --- rrvmm's 8259: rrvmm injects ---
class InjectingCpu:
    def __init__(self) -> None:
        self.enabled = False
        self.window: list[bool] = []
        self.injected: list[int] = []

    def interrupts_enabled(self) -> bool:
        return self.enabled

    def request_interrupt_window(self, on: bool) -> None:
        self.window.append(on)

    def inject_interrupt(self, vector: int) -> None:
        self.injected.append(vector)


def test_user_pic_injects_when_the_cpu_can_take_it() -> None:
    cpu, seam, pic = InjectingCpu(), RecordingSeam(), Pic8259Pair()
    routing = UserPic(cpu, pic, seam)  # type: ignore[arg-type]  # only what injection uses
    assert routing.deliver(1) is None and cpu.window == [False]
    routing.set_line(5, True)
    assert routing.pending()
    assert routing.deliver(2) is None and cpu.window[-1] is True  # IF clear: ask for a window
    cpu.enabled = True
    assert routing.deliver(3) == 5 and cpu.injected == [5]  # uninitialised: vector base 0
    assert cpu.window[-1] is False and seam.log == [("inject", 3, 5)]
    assert not routing.pending() and routing.poll_ns() is None
    assert routing.devices() == {"pic": pic} and not routing.halted_in_backend()
