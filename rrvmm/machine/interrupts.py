"""How device interrupt lines reach the vCPU: through rrvmm's 8259, or the backend's own.

Two strategies behind one interface, chosen once when the machine is built:

- ``UserPic``: rrvmm's 8259 model (``rrvmm.devices.pic``) takes the lines. Between exits
  the machine injects the vector it hands out when the vCPU can take it (KVM_INTERRUPT on
  KVM), else asks for an interrupt window. Every injection is a seam event.
- ``ApicLines``: rrvmm's local APIC, I/O APIC and 8259 (``--apic on``): device lines go
  to the 8259 and the I/O APIC (ISA IRQ 0 on pin 2, as the MADT says); the local APIC
  decides what the CPU takes (the 8259's vector through LINT0 in ExtINT mode, or its own
  IRR) and rrvmm injects it at an exit exactly as ``UserPic`` does.
- ``KernelLines``: KVM's in-kernel 8259 (``--irqchip kernel``) takes the lines through
  KVM_IRQ_LINE and delivers by itself; its ports, EOIs and HLTs never exit. What stays
  with rrvmm is *when* a line changes: only at a point replay finds again (every line
  change is a seam event). The backend hands out the controller's raw registers; what they
  mean is read here with rrvmm's own 8259 model, so the backend knows no device model.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from rrvmm.cpu.backend import CpuBackend, KernelIrqchip, PicRegisters
from rrvmm.devices.ioapic import ApicMessage, IoApic
from rrvmm.devices.lapic import LocalApic
from rrvmm.devices.pic import Pic8259Pair, PicChipState
from rrvmm.seam import Seam

__all__ = [
    "ApicLines",
    "InterruptRouting",
    "KernelLines",
    "UserPic",
    "deliverable_vector",
    "edge_taken_at_entry",
    "pending_vector",
]

log = logging.getLogger("rrvmm")

# kernel irqchip: an edge the guest cannot take yet is retried after a kick this soon; with
# nothing due, a kick this often shows whether the guest halted for good
LINE_RETRY_NS = 200_000
HALT_POLL_NS = 100_000_000


class InterruptRouting(ABC):
    """Where device interrupt lines go, and how a pending interrupt reaches the vCPU."""

    name: str  # as trace headers store it: 'user' or 'kernel'

    @abstractmethod
    def set_line(self, line: int, level: bool) -> None:
        """A device drove input ``line`` (devices call this through ``IrqLine``)."""

    @abstractmethod
    def deliver(self, index: int) -> int | None:
        """Between exits, before the entry after exit ``index``: hand what is pending
        towards the vCPU. Returns the vector rrvmm injected, if it did."""

    @abstractmethod
    def poll_ns(self) -> int | None:
        """How soon a live seam must kick the vCPU even with no deadline due, or None."""

    @abstractmethod
    def pending(self) -> bool:
        """An interrupt waits that would wake a halted guest."""

    @abstractmethod
    def unrecordable(self) -> str | None:
        """Why the guest has left what can be recorded (one line), or None."""

    @abstractmethod
    def halted_in_backend(self) -> bool:
        """After a kick: the vCPU sits in a HLT that never exited."""

    @abstractmethod
    def devices(self) -> dict[str, Any]:
        """The controller devices whose state a checkpoint must carry, by name."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Routing state beyond the devices, plain data, for a machine snapshot."""

    @abstractmethod
    def restore(self, snap: dict[str, Any]) -> None: ...


class UserPic(InterruptRouting):
    """rrvmm's 8259 takes the lines; rrvmm injects at exits."""

    name = "user"

    def __init__(self, cpu: CpuBackend, pic: Pic8259Pair, seam: Seam) -> None:
        self.cpu = cpu
        self.pic = pic
        self.seam = seam

    def set_line(self, line: int, level: bool) -> None:
        self.pic.set_irq(line, level)

    def deliver(self, index: int) -> int | None:
        cpu = self.cpu
        if not self.pic.has_interrupt():
            cpu.request_interrupt_window(False)
            return None
        if not cpu.interrupts_enabled():
            cpu.request_interrupt_window(True)
            return None
        vector = self.pic.acknowledge()
        cpu.inject_interrupt(vector)
        cpu.request_interrupt_window(False)
        self.seam.on_inject(index, vector)
        return vector

    def poll_ns(self) -> int | None:
        return None  # HLT exits: the machine waits in the seam itself

    def pending(self) -> bool:
        return self.pic.has_interrupt()

    def unrecordable(self) -> str | None:
        return None

    def halted_in_backend(self) -> bool:
        return False

    def devices(self) -> dict[str, Any]:
        return {"pic": self.pic}

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snap: dict[str, Any]) -> None:
        pass


class ApicLines(InterruptRouting):
    """The modern PC's controllers, all rrvmm's: 8259 pair, I/O APIC, one local APIC.

    Lines are ISA IRQs: IRQ n drives 8259 input n and I/O APIC pin n, IRQ 0 pin 2 (the
    override the MADT and fw_cfg announce; the 8259's input 2 is the cascade). The local
    APIC is the CPU's one source: ExtINT from the 8259 through LINT0 (the reset state, so a
    PIC-mode guest keeps working) or a vector from its IRR. Injection is ``UserPic``'s.
    """

    name = "user"  # rrvmm injects: the trace header's irqchip stays 'user'

    def __init__(self, cpu: CpuBackend, pic: Pic8259Pair, lapic: LocalApic, ioapic: IoApic,
                 seam: Seam) -> None:  # fmt: skip
        self.cpu = cpu
        self.pic = pic
        self.lapic = lapic
        self.ioapic = ioapic
        self.seam = seam
        self._nmi_logged = False

    def set_line(self, line: int, level: bool) -> None:
        if line != 2:
            self.pic.set_irq(line, level)
        self.ioapic.set_irq(2 if line == 0 else line, level)

    def route(self, msg: ApicMessage) -> None:
        """An I/O APIC message: to the local APIC if it is addressed (one CPU)."""
        if self.lapic.matches(msg.dest, msg.logical):
            self.lapic.deliver(msg.vector, msg.delivery_mode, msg.trigger_level)

    def deliver(self, index: int) -> int | None:
        cpu = self.cpu
        lapic = self.lapic
        lapic.take_ipis()  # one CPU: IPIs to itself are delivered by the APIC already
        if lapic.take_nmi() and not self._nmi_logged:
            self._nmi_logged = True
            log.warning("the guest asked for an NMI through its local APIC: not delivered")
        if not lapic.has_interrupt():
            cpu.request_interrupt_window(False)
            return None
        if not cpu.interrupts_enabled():
            cpu.request_interrupt_window(True)
            return None
        vector = lapic.acknowledge()
        cpu.inject_interrupt(vector)
        cpu.request_interrupt_window(False)
        self.seam.on_inject(index, vector)
        return vector

    def poll_ns(self) -> int | None:
        return None  # HLT exits, as with UserPic

    def pending(self) -> bool:
        return self.lapic.has_interrupt()

    def unrecordable(self) -> str | None:
        return None

    def halted_in_backend(self) -> bool:
        return False

    def devices(self) -> dict[str, Any]:
        return {"pic": self.pic, "ioapic": self.ioapic, "lapic": self.lapic}

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snap: dict[str, Any]) -> None:
        pass


class KernelLines(InterruptRouting):
    """The backend's own 8259 takes the lines, each change timed to be reproducible.

    A rising edge is kept (a pulse within one exit must not vanish) until it can be given
    to KVM at a point where it is taken at once (``edge_taken_at_entry``); lowering a line
    is handed over at once.
    """

    name = "kernel"

    def __init__(self, chip: KernelIrqchip, seam: Seam) -> None:
        self.chip = chip
        self.seam = seam
        self.level: dict[int, bool] = {}  # what the devices drive
        self.given: dict[int, bool] = {}  # what the backend's PIC was given
        self.edges: set[int] = set()  # rising edges not yet given to the backend
        self.waiting = False  # an edge was held back at the last entry

    def set_line(self, line: int, level: bool) -> None:
        """Noted; handed over before the next entry (``deliver``)."""
        if level and not self.level.get(line, False):
            self.edges.add(line)
        self.level[line] = level

    def deliver(self, index: int) -> int | None:
        """Hand line changes over (and to the seam): lowering at once, a rising edge only
        where the guest takes it at the entry; the rest waits for a later exit, and
        ``poll_ns`` asks the seam to make one soon."""
        self.waiting = False
        for line in sorted(self.level):
            level = self.level[line]
            if line in self.edges:
                if not edge_taken_at_entry(self.chip, line):
                    self.waiting = True
                    continue
                self.edges.discard(line)
                self._give(index, line, True)
            if self.given.get(line, False) != level:
                self._give(index, line, level)
        return None  # the backend delivers

    def _give(self, index: int, line: int, level: bool) -> None:
        if self.given.get(line, False) == level:
            if not level:
                return
            self.chip.set_irq_line(line, False)  # for an edge
        self.chip.set_irq_line(line, level)
        self.given[line] = level
        self.seam.on_irq_line(index, line, level)

    def poll_ns(self) -> int | None:
        return LINE_RETRY_NS if self.waiting else HALT_POLL_NS

    def pending(self) -> bool:
        return bool(self.edges) or deliverable_vector(self.chip) is not None

    def unrecordable(self) -> str | None:
        if self.chip.lapic_timer_armed():
            return (
                "the guest started the local APIC timer, which --irqchip kernel cannot"
                " record; use --irqchip user"
            )
        return None

    def halted_in_backend(self) -> bool:
        return self.chip.halted()

    def deliverable_vector(self) -> int | None:
        return deliverable_vector(self.chip)

    def devices(self) -> dict[str, Any]:
        return {}  # the PIC's state is the backend's, saved with the vCPU

    def snapshot(self) -> dict[str, Any]:
        return {
            "kernel_lines": [
                sorted(self.level.items()),
                sorted(self.given.items()),
                sorted(self.edges),
            ]
        }

    def restore(self, snap: dict[str, Any]) -> None:
        if "kernel_lines" in snap:
            level, given, edges = snap["kernel_lines"]
            self.level, self.given, self.edges = dict(level), dict(given), set(edges)


# --- the backend's 8259, read with rrvmm's model ---
def _load(c: PicChipState, k: PicRegisters) -> None:
    c.irr, c.imr, c.isr = k.irr, k.imr, k.isr
    c.priority_add, c.irq_base = k.priority_add, k.irq_base
    c.lines, c.elcr = k.last_irr, k.elcr
    c.special_mask, c.poll = bool(k.special_mask), bool(k.poll)
    c.auto_eoi, c.rotate_on_auto_eoi = bool(k.auto_eoi), bool(k.rotate_on_auto_eoi)
    c.special_fully_nested = bool(k.special_fully_nested_mode)
    c.init_state, c.init4 = k.init_state, bool(k.init4)


def pending_vector(
    regs: tuple[PicRegisters, PicRegisters], raise_line: int | None = None
) -> int | None:
    """The vector a PIC pair with these registers hands the CPU at its next INTA, if any
    (after a rising edge on ``raise_line``, if given)."""
    pair = Pic8259Pair()
    _load(pair.state.master, regs[0])
    _load(pair.state.slave, regs[1])
    if raise_line is not None:
        pair.set_irq(raise_line, False)
        pair.set_irq(raise_line, True)
    return pair.pending_vector()


def line_vector(regs: tuple[PicRegisters, PicRegisters], line: int) -> int:
    """The vector the PIC's current programming gives ``line``."""
    return regs[0 if line < 8 else 1].irq_base + (line & 7)


def deliverable_vector(chip: KernelIrqchip) -> int | None:
    """The vector the next entry delivers (IF set, no STI/MOV SS shadow), if any.

    The debugger needs it to stop at a handler's first instruction, the machine and the
    replayer to know whether a halted guest can still wake.
    """
    queued = chip.queued_interrupt()
    if queued is None or queued.shadow:
        return None
    return queued.vector if queued.injected else pending_vector(chip.pic_registers())


def edge_taken_at_entry(chip: KernelIrqchip, line: int) -> bool:
    """A rising edge on ``line`` now would be delivered at the next entry.

    Only such edges are handed to KVM: one it would hold pending is delivered when the
    guest opens its window, and KVM's instruction emulator (kvm_pvm hosts) notices that
    only at the end of a batch of instructions that began at the last entry, a point
    replay cannot reproduce.
    """
    queued = chip.queued_interrupt()
    if queued is None:
        return False
    # An interrupt already on its way (pending in the PIC, or acknowledged and queued by
    # an entry that a kick cut short) holds the edge back either way: which of the two KVM
    # shows depends on where the kick fell, not on the guest.
    if queued.shadow or queued.injected:
        return False
    regs = chip.pic_registers()
    if pending_vector(regs) is not None:
        return False
    return pending_vector(regs, raise_line=line) == line_vector(regs, line)
