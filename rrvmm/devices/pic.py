"""The PC's cascaded 8259A pair (master at 0x20, slave at 0xa0 on master IR2) and the ELCR.

One device owns both chips so that the cascade and the INTA cycle stay inside one state
object.  Offsets: 0/1 master command/data, 2/3 slave command/data, 4/5 ELCR master/slave
(ports 0x4d0/0x4d1, as on PIIX and later chipsets).

Semantics follow the datasheet and QEMU's i8259 (which Linux is known to run on):
- Edge-triggered lines set IRR on a rising edge; lines whose ELCR bit is set are level
  triggered and their IRR bit follows the line.  ICW1's LTIM bit is ignored, as on chipsets
  with an ELCR.  IRQ0, 1, 2, 8 and 13 cannot be made level-triggered (ELCR masks).
- The slave's INT output drives master IR2 like any other line (edge-triggered there).
- Rotate commands, specific/non-specific EOI, auto-EOI (with rotate), special mask mode,
  special fully nested mode, poll mode (OCW3 bit 2) and IRR/ISR reads are modelled.
- ICW3 is accepted and ignored: the cascade wiring is fixed.  Vectors are always 8086-style.
- ICW1 resets a chip's IMR, ISR, edge-pending IRR bits and modes; the current line levels
  are kept, so a line already high needs a new rising edge (the datasheet's edge-sense reset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrvmm.devices.isa import ByteRegisters

__all__ = ["Pic8259Pair", "PicState", "PicChipState", "CASCADE_IRQ"]

CASCADE_IRQ = 2

# ICW1 / OCW2 / OCW3 bits (8259A datasheet).
ICW1_IC4 = 0x01  # ICW4 will follow
ICW1_SNGL = 0x02  # single mode: no ICW3
ICW1_INIT = 0x10
OCW3_SELECT = 0x08  # bit 4 = 0, bit 3 = 1 marks OCW3
OCW3_RIS = 0x01  # read ISR instead of IRR
OCW3_RR = 0x02  # RIS is valid
OCW3_POLL = 0x04
OCW3_SMM = 0x20  # special mask mode value
OCW3_ESMM = 0x40  # SMM is valid
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10

_ELCR_MASK_MASTER = 0xF8
_ELCR_MASK_SLAVE = 0xDE


@dataclass
class PicChipState:
    """One 8259A's registers and mode flags."""

    irr: int = 0
    imr: int = 0
    isr: int = 0
    lines: int = 0  # current input levels, for edge detection
    elcr: int = 0  # 1 = level-triggered (not reset by ICW1)
    priority_add: int = 0  # the IR number that currently has the highest priority
    irq_base: int = 0
    read_isr: bool = False
    poll: bool = False
    special_mask: bool = False
    init_state: int = 0  # 0 = ready, 1..3 = waiting for ICW2..ICW4
    init4: bool = False
    single_mode: bool = False
    auto_eoi: bool = False
    rotate_on_auto_eoi: bool = False
    special_fully_nested: bool = False


@dataclass
class PicState:
    master: PicChipState = field(default_factory=PicChipState)
    slave: PicChipState = field(default_factory=PicChipState)


def _priority(c: PicChipState, mask: int) -> int:
    """Rank (0 = highest) of the highest-priority bit in ``mask``; 8 if none."""
    if not mask:
        return 8
    rank = 0
    while not mask & (1 << ((rank + c.priority_add) & 7)):
        rank += 1
    return rank


def _pending_irq(c: PicChipState, is_master: bool) -> int:
    """The IR this chip would raise INT for, or -1."""
    rank = _priority(c, c.irr & ~c.imr)
    if rank == 8:
        return -1
    in_service = c.isr
    if c.special_mask:
        in_service &= ~c.imr
    if c.special_fully_nested and is_master:
        in_service &= ~(1 << CASCADE_IRQ)
    if rank < _priority(c, in_service):
        return (rank + c.priority_add) & 7
    return -1


def _set_input(c: PicChipState, irq: int, level: bool) -> None:
    mask = 1 << irq
    if c.elcr & mask:
        if level:
            c.irr |= mask
        else:
            c.irr &= ~mask
    elif level and not c.lines & mask:
        c.irr |= mask
    if level:
        c.lines |= mask
    else:
        c.lines &= ~mask


def _intack(c: PicChipState, irq: int) -> None:
    if c.auto_eoi:
        if c.rotate_on_auto_eoi:
            c.priority_add = (irq + 1) & 7
    else:
        c.isr |= 1 << irq
    if not c.elcr & (1 << irq):
        c.irr &= ~(1 << irq)  # a level-triggered request stays until the line drops


def _reset_chip(c: PicChipState) -> None:
    """What ICW1 does: everything but ELCR and the line levels."""
    c.irr &= c.elcr
    c.imr = 0
    c.isr = 0
    c.priority_add = 0
    c.irq_base = 0
    c.read_isr = False
    c.poll = False
    c.special_mask = False
    c.init_state = 0
    c.init4 = False
    c.single_mode = False
    c.auto_eoi = False
    c.rotate_on_auto_eoi = False
    c.special_fully_nested = False


class Pic8259Pair(ByteRegisters):
    """Master + slave 8259A and the ELCR; the run loop asks ``has_interrupt``/``acknowledge``."""

    windows = ((0, 2), (2, 4), (4, 6))

    def __init__(self) -> None:
        self.state = PicState()

    def reset(self) -> None:
        """Power-on: both chips uninitialized (vector base 0, nothing masked), all edge.

        The input wires keep their levels: devices only report changes.
        """
        old = self.state
        self.state = PicState(
            master=PicChipState(lines=old.master.lines & ~(1 << CASCADE_IRQ)),
            slave=PicChipState(lines=old.slave.lines),
        )

    # -- inputs and the INTA cycle -----------------------------------------------------

    def set_irq(self, line: int, level: bool) -> None:
        """Drive ISA IRQ ``line`` (0..15, not the cascade line 2); usable as an IrqLine sink."""
        if line == CASCADE_IRQ or not 0 <= line < 16:
            raise ValueError(f"IRQ line {line} cannot be driven (2 is the cascade)")
        if line < 8:
            _set_input(self.state.master, line, level)
        else:
            _set_input(self.state.slave, line - 8, level)
            self._cascade()

    def _cascade(self) -> None:
        """Propagate the slave's INT output to master IR2."""
        _set_input(self.state.master, CASCADE_IRQ, _pending_irq(self.state.slave, False) >= 0)

    def has_interrupt(self) -> bool:
        """Whether the master's INT output is asserted (an INTA cycle would find a vector)."""
        return _pending_irq(self.state.master, True) >= 0

    def pending_vector(self) -> int | None:
        """The vector ``acknowledge`` would return now, without side effects; None if none."""
        m, s = self.state.master, self.state.slave
        irq = _pending_irq(m, True)
        if irq < 0:
            return None
        if irq == CASCADE_IRQ:
            irq2 = _pending_irq(s, False)
            return s.irq_base + (irq2 if irq2 >= 0 else 7)
        return m.irq_base + irq

    def acknowledge(self) -> int:
        """The INTA cycle: IRR -> ISR on the chip(s) involved; returns the vector.

        With nothing pending the chip answers with its IR7 vector without setting ISR (a
        spurious interrupt); a slave with nothing left answers IR7 (IRQ15) while the master
        still marks IR2 in service, as real hardware does.
        """
        m, s = self.state.master, self.state.slave
        irq = _pending_irq(m, True)
        if irq < 0:
            return m.irq_base + 7
        if irq == CASCADE_IRQ:
            irq2 = _pending_irq(s, False)
            if irq2 >= 0:
                _intack(s, irq2)
            else:
                irq2 = 7
            vector = s.irq_base + irq2
            self._cascade()
        else:
            vector = m.irq_base + irq
        _intack(m, irq)
        return vector

    # -- registers -----------------------------------------------------------------------

    def read8(self, offset: int) -> int:
        if offset == 4:
            return self.state.master.elcr
        if offset == 5:
            return self.state.slave.elcr
        is_master = offset < 2
        c = self.state.master if is_master else self.state.slave
        if c.poll:
            c.poll = False
            value = self._poll(c, is_master)
        elif offset & 1:
            value = c.imr
        else:
            value = c.isr if c.read_isr else c.irr
        return value

    def _poll(self, c: PicChipState, is_master: bool) -> int:
        """Poll mode: the read is the acknowledge (cascade not followed, as QEMU)."""
        irq = _pending_irq(c, is_master)
        if irq < 0:
            return 0
        _intack(c, irq)
        if not is_master:
            self._cascade()
        return 0x80 | irq

    def write8(self, offset: int, value: int) -> None:
        if offset == 4:
            self.state.master.elcr = value & _ELCR_MASK_MASTER
            return
        if offset == 5:
            self.state.slave.elcr = value & _ELCR_MASK_SLAVE
            return
        is_master = offset < 2
        c = self.state.master if is_master else self.state.slave
        if offset & 1:
            self._write_data(c, value)
        else:
            self._write_command(c, value)
        if not is_master:
            self._cascade()

    def _write_command(self, c: PicChipState, value: int) -> None:
        if value & ICW1_INIT:
            _reset_chip(c)
            c.init_state = 1
            c.init4 = bool(value & ICW1_IC4)
            c.single_mode = bool(value & ICW1_SNGL)
        elif value & OCW3_SELECT:
            if value & OCW3_POLL:
                c.poll = True
            if value & OCW3_RR:
                c.read_isr = bool(value & OCW3_RIS)
            if value & OCW3_ESMM:
                c.special_mask = bool(value & OCW3_SMM)
        else:
            self._write_ocw2(c, value)

    @staticmethod
    def _write_ocw2(c: PicChipState, value: int) -> None:
        cmd = value >> 5
        if cmd in (0, 4):  # clear / set rotate in automatic EOI mode
            c.rotate_on_auto_eoi = cmd == 4
        elif cmd in (1, 5):  # non-specific EOI (5: and rotate)
            rank = _priority(c, c.isr)
            if rank != 8:
                irq = (rank + c.priority_add) & 7
                c.isr &= ~(1 << irq)
                if cmd == 5:
                    c.priority_add = (irq + 1) & 7
        elif cmd == 3:  # specific EOI
            c.isr &= ~(1 << (value & 7))
        elif cmd == 6:  # set priority: IR value&7 becomes the lowest
            c.priority_add = (value + 1) & 7
        elif cmd == 7:  # rotate on specific EOI
            irq = value & 7
            c.isr &= ~(1 << irq)
            c.priority_add = (irq + 1) & 7
        # cmd 2 is a no-op

    @staticmethod
    def _write_data(c: PicChipState, value: int) -> None:
        if c.init_state == 0:  # OCW1
            c.imr = value
        elif c.init_state == 1:  # ICW2
            c.irq_base = value & 0xF8
            c.init_state = (3 if c.init4 else 0) if c.single_mode else 2
        elif c.init_state == 2:  # ICW3: the wiring is fixed
            c.init_state = 3 if c.init4 else 0
        else:  # ICW4
            c.special_fully_nested = bool(value & ICW4_SFNM)
            c.auto_eoi = bool(value & ICW4_AEOI)
            c.init_state = 0
