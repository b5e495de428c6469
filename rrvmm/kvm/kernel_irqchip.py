"""KVM's in-kernel interrupt controllers, driven so that a recording stays exact.

With ``KVM_CREATE_IRQCHIP`` the guest's PIC port accesses, EOIs and HLTs never leave the
kernel, which removes most of the exits a timer interrupt costs. What stays with rrvmm is
*when* a line changes: only here, synchronously with ``KVM_IRQ_LINE``, while the vCPU is
out of ``KVM_RUN``. The kernel then delivers the interrupt at the next entry or when the
guest opens its interrupt window, both functions of guest state. irqfd is not used for
lines: KVM injects an irqfd signal for PIC/IOAPIC routes from a workqueue, at a moment no
recorder can see.

The local APIC that comes with the irqchip is switched off (IA32_APIC_BASE enable bit
clear): its timer would be an unrecorded interrupt source, and with the APIC disabled KVM
routes the PIC's INTR straight to the CPU. A guest that enables the APIC and arms its
timer is refused (``lapic_timer_armed``).
"""

from __future__ import annotations

import ctypes as C

from rrvmm.devices.pic import Pic8259Pair, PicChipState
from rrvmm.kvm import linux_kvm as K
from rrvmm.kvm.kvm import KvmVcpu, KvmVm, ioctl

__all__ = ["KernelIrqchip", "LAPIC_DISABLED_BASE"]

_CHIPS = {"pic_master": 0, "pic_slave": 1, "ioapic": 2}
LAPIC_DISABLED_BASE = 0xFEE0_0000 | (1 << 8)  # BSP bit, global enable (bit 11) clear
_APIC_ENABLE = 1 << 11
_LVT_TIMER = 0x320
_TIMER_INITIAL_COUNT = 0x380
_LVT_MASKED = 1 << 16


class KernelIrqchip:
    def __init__(self, vm: KvmVm) -> None:
        ioctl(vm.fd, K.KVM_CREATE_IRQCHIP)
        self.vm = vm
        self._level = K.kvm_irq_level()

    def disable_lapic(self, vcpu: KvmVcpu) -> None:
        vcpu.set_msrs({K.MSR_IA32_APICBASE: LAPIC_DISABLED_BASE})

    def set_line(self, line: int, level: bool) -> None:
        lv = self._level
        lv.irq, lv.level = line, 1 if level else 0
        ioctl(self.vm.fd, K.KVM_IRQ_LINE, lv)

    def _get(self, chip_id: int) -> K.kvm_irqchip:
        chip = K.kvm_irqchip()
        chip.chip_id = chip_id
        ioctl(self.vm.fd, K.KVM_GET_IRQCHIP, chip)
        return chip

    def save(self, vcpu: KvmVcpu) -> dict[str, bytes]:
        """PIC pair, IOAPIC and LAPIC as raw blobs (checkpoints carry them)."""
        out = {name: bytes(self._get(cid)) for name, cid in _CHIPS.items()}
        out["lapic"] = bytes(vcpu.get(K.KVM_GET_LAPIC, K.kvm_lapic_state))
        return out

    def restore(self, vcpu: KvmVcpu, state: dict[str, bytes]) -> None:
        for name in _CHIPS:
            ioctl(self.vm.fd, K.KVM_SET_IRQCHIP, K.kvm_irqchip.from_buffer_copy(state[name]))
        vcpu.set(K.KVM_SET_LAPIC, K.kvm_lapic_state.from_buffer_copy(state["lapic"]))

    def pending_vector(self, raise_line: int | None = None) -> int | None:
        """The vector the PIC would hand the CPU at its next INTA, if any (after a rising
        edge on ``raise_line``, if given: nothing is changed in KVM).

        Computed by rrvmm's own 8259 model from the kernel's registers: the debugger
        needs it to stop at a handler's first instruction, the machine to know whether
        an edge would be taken at once.
        """
        pair = Pic8259Pair()
        for chip, cid in ((pair.state.master, 0), (pair.state.slave, 1)):
            _load(chip, K.kvm_pic_state.from_buffer_copy(bytes(self._get(cid)), 8))
        if raise_line is not None:
            pair.set_irq(raise_line, False)
            pair.set_irq(raise_line, True)
        return pair.pending_vector()

    def line_vector(self, line: int) -> int:
        """The vector the PIC's current programming gives ``line``."""
        chip = K.kvm_pic_state.from_buffer_copy(bytes(self._get(0 if line < 8 else 1)), 8)
        return chip.irq_base + (line & 7)

    def lapic_timer_armed(self, vcpu: KvmVcpu) -> bool:
        """The guest enabled the local APIC and started its timer (not recordable)."""
        if not vcpu.get_msrs([K.MSR_IA32_APICBASE]).get(K.MSR_IA32_APICBASE, 0) & _APIC_ENABLE:
            return False
        regs = bytes(vcpu.get(K.KVM_GET_LAPIC, K.kvm_lapic_state))
        lvt = int.from_bytes(regs[_LVT_TIMER : _LVT_TIMER + 4], "little")
        count = int.from_bytes(regs[_TIMER_INITIAL_COUNT : _TIMER_INITIAL_COUNT + 4], "little")
        return not lvt & _LVT_MASKED and count != 0


def _load(c: PicChipState, k: K.kvm_pic_state) -> None:
    c.irr, c.imr, c.isr = k.irr, k.imr, k.isr
    c.priority_add, c.irq_base = k.priority_add, k.irq_base
    c.lines, c.elcr = k.last_irr, k.elcr
    c.special_mask, c.poll = bool(k.special_mask), bool(k.poll)
    c.auto_eoi, c.rotate_on_auto_eoi = bool(k.auto_eoi), bool(k.rotate_on_auto_eoi)
    c.special_fully_nested = bool(k.special_fully_nested_mode)
    c.init_state, c.init4 = k.init_state, bool(k.init4)


assert C.sizeof(K.kvm_irqchip) == 520
