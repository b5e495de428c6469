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

The PIC's registers are handed out raw (``PicRegisters``); what they mean is rrvmm's 8259
model's business, on the machine side (``rrvmm.machine.interrupts``).
"""

from __future__ import annotations

import ctypes as C
import dataclasses

from rrvmm.cpu.backend import PicRegisters
from rrvmm.kvm import linux_kvm as K
from rrvmm.kvm.kvm import KvmVcpu, KvmVm, ioctl

__all__ = ["KvmIrqchip", "LAPIC_DISABLED_BASE"]

_CHIPS = {"pic_master": 0, "pic_slave": 1, "ioapic": 2}
LAPIC_DISABLED_BASE = 0xFEE0_0000 | (1 << 8)  # BSP bit, global enable (bit 11) clear
_APIC_ENABLE = 1 << 11
_LVT_TIMER = 0x320
_TIMER_INITIAL_COUNT = 0x380
_LVT_MASKED = 1 << 16


class KvmIrqchip:
    """The VM's in-kernel PIC pair, IOAPIC and LAPIC: lines in, raw state out."""

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

    def pic_registers(self) -> tuple[PicRegisters, PicRegisters]:
        """Master and slave as KVM holds them (``KVM_GET_IRQCHIP``), field by field."""
        master, slave = (
            K.kvm_pic_state.from_buffer_copy(bytes(self._get(cid)), 8) for cid in (0, 1)
        )
        return _registers(master), _registers(slave)

    def lapic_timer_armed(self, vcpu: KvmVcpu) -> bool:
        """The guest enabled the local APIC and started its timer (not recordable)."""
        if not vcpu.get_msrs([K.MSR_IA32_APICBASE]).get(K.MSR_IA32_APICBASE, 0) & _APIC_ENABLE:
            return False
        regs = bytes(vcpu.get(K.KVM_GET_LAPIC, K.kvm_lapic_state))
        lvt = int.from_bytes(regs[_LVT_TIMER : _LVT_TIMER + 4], "little")
        count = int.from_bytes(regs[_TIMER_INITIAL_COUNT : _TIMER_INITIAL_COUNT + 4], "little")
        return not lvt & _LVT_MASKED and count != 0


def _registers(k: K.kvm_pic_state) -> PicRegisters:
    return PicRegisters(**{f.name: getattr(k, f.name) for f in dataclasses.fields(PicRegisters)})


assert C.sizeof(K.kvm_irqchip) == 520
