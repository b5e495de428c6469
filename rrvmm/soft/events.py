"""Interrupt and exception delivery through the guest's IDT, SYSCALL and SYSENTER, in Python.

Unicorn stops at every exception and interrupt instead of delivering it (it only calls a
hook), so the backend does what the CPU does: read the gate, check it, pick the stack
(TSS.RSPn or an IST slot in long mode, TSS SS:ESP in protected mode), push the frame,
load CS (and SS on a privilege change) and jump. A fault while doing so becomes the next
event, folded into #DF by the architectural rules; a fault while delivering #DF is a
triple fault. The sequence follows QEMU's ``do_interrupt64``/``do_interrupt_protected``
(which unicorn contains but never calls), so a guest sees what QEMU would show it.
"""

from __future__ import annotations

import struct

from rrvmm.soft import layout as L
from rrvmm.soft.mmu import GuestFault, Walker

__all__ = ["Delivery", "TripleFault"]

_SEG_OFF = {n: L.SEGS + L.SEG_SIZE * i for n, i in L.SEG_INDEX.items()}
_CS, _SS = _SEG_OFF["cs"], _SEG_OFF["ss"]
_FLAT_CODE = L.DESC_G_MASK | L.DESC_P_MASK | L.DESC_S_MASK | L.DESC_CS_MASK | L.DESC_R_MASK
_FLAT_DATA = L.DESC_G_MASK | L.DESC_B_MASK | L.DESC_P_MASK | L.DESC_S_MASK | L.DESC_W_MASK


class TripleFault(Exception):
    """Delivering #DF faulted: the CPU shuts down."""


def _base(e1: int, e2: int) -> int:
    return (e1 >> 16) | ((e2 & 0xFF) << 16) | (e2 & 0xFF00_0000)


def _limit(e1: int, e2: int) -> int:
    limit = (e1 & 0xFFFF) | (e2 & 0x000F_0000)
    return (limit << 12) | 0xFFF if e2 & L.DESC_G_MASK else limit


class Delivery:
    def __init__(self, engine, walker: Walker) -> None:  # noqa: ANN001 - Engine
        self.e = engine
        self.w = walker
        self.delivered = 0

    # --- the event, with nesting ---
    def deliver(
        self,
        vector: int,
        error_code: int | None = None,
        software: bool = False,
        external: bool = False,
        cr2: int | None = None,
    ) -> None:
        """Deliver one event; nested faults become #DF, then TripleFault."""
        e = self.e
        if cr2 is not None:
            e.cr[2] = cr2
        ext = 1 if external else 0
        while True:
            try:
                self._deliver_once(vector, error_code, software, ext)
                break
            except GuestFault as f:
                if vector == L.EXC_DF:
                    raise TripleFault from None
                if f.cr2 is not None:
                    e.cr[2] = f.cr2
                first_c = vector in L.EXC_CONTRIBUTORY
                second_c = f.vector in L.EXC_CONTRIBUTORY
                if (first_c and second_c) or (
                    vector == L.EXC_PF and (second_c or f.vector == L.EXC_PF)
                ):
                    vector, error_code = L.EXC_DF, 0
                else:
                    vector, error_code = f.vector, f.error_code
                software, ext = False, 1
        e.old_exception.value = -1  # nothing in flight: QEMU's own #DF logic starts afresh
        e.hflags.value &= ~L.HF_INHIBIT_IRQ_MASK
        self.delivered += 1

    def _deliver_once(self, vector: int, error_code: int | None, software: bool, ext: int) -> None:
        e = self.e
        if not e.cr[0] & L.CR0_PE:
            raise GuestFault(L.EXC_GP, 0)  # real mode is not supported (never entered)
        if e.hflags.value & L.HF_LMA_MASK:
            self._deliver64(vector, error_code, software, ext)
        else:
            self._deliver32(vector, error_code, software, ext)

    # --- descriptors ---
    def _descriptor(self, selector: int, ext: int) -> tuple[int, int]:
        """(low dword, high dword) of a GDT/LDT descriptor; #GP(selector) if outside."""
        e = self.e
        if selector & 4:
            _, base, limit, _ = e.segment(L.LDT)
        else:
            base, limit = e.u64(L.GDT + 8), e.u32(L.GDT + 16)
        index = selector & ~7
        if index + 7 > limit:
            raise GuestFault(L.EXC_GP, (selector & 0xFFFC) | ext)
        e1, e2 = struct.unpack("<II", self.w.read(base + index, 8))
        return e1, e2

    def _code_segment(self, selector: int, cpl: int, ext: int, long_mode: bool) -> tuple:
        if selector & 0xFFFC == 0:
            raise GuestFault(L.EXC_GP, ext)
        e1, e2 = self._descriptor(selector, ext)
        err = (selector & 0xFFFC) | ext
        if not e2 & L.DESC_S_MASK or not e2 & L.DESC_CS_MASK:
            raise GuestFault(L.EXC_GP, err)
        dpl = (e2 >> L.DESC_DPL_SHIFT) & 3
        if dpl > cpl:
            raise GuestFault(L.EXC_GP, err)
        if not e2 & L.DESC_P_MASK:
            raise GuestFault(L.EXC_NP, err)
        if long_mode and (not e2 & L.DESC_L_MASK or e2 & L.DESC_B_MASK):
            raise GuestFault(L.EXC_GP, err)
        new_cpl = cpl if e2 & L.DESC_C_MASK else dpl
        return e1, e2, new_cpl

    def _gate(self, vector: int, size: int, software: bool, ext: int) -> bytes:
        e = self.e
        base, limit = e.u64(L.IDT + 8), e.u32(L.IDT + 16)
        idt_err = vector * 8 + 2 + ext
        if vector * size + size - 1 > limit:
            raise GuestFault(L.EXC_GP, idt_err)
        return self.w.read(base + vector * size, size)

    # --- long mode ---
    def _deliver64(self, vector: int, error_code: int | None, software: bool, ext: int) -> None:
        e = self.e
        lo, hi = struct.unpack("<QQ", self._gate(vector, 16, software, ext))
        idt_err = vector * 8 + 2 + ext
        gtype = (lo >> 40) & 0x1F
        dpl = (lo >> 45) & 3
        cpl = e.hflags.value & 3
        if gtype not in (0xE, 0xF):
            raise GuestFault(L.EXC_GP, idt_err)
        if software and dpl < cpl:
            raise GuestFault(L.EXC_GP, idt_err)
        if not (lo >> 47) & 1:
            raise GuestFault(L.EXC_NP, idt_err)
        selector = (lo >> 16) & 0xFFFF
        offset = (lo & 0xFFFF) | ((lo >> 32) & 0xFFFF_0000) | ((hi & 0xFFFF_FFFF) << 32)
        ist = (lo >> 32) & 7
        e1, e2, new_cpl = self._code_segment(selector, cpl, ext, True)
        regs = e.regs
        if ist:
            rsp = self._tss64(36 + 8 * (ist - 1), ext)
        elif new_cpl < cpl:
            rsp = self._tss64(4 + 8 * new_cpl, ext)
        else:
            rsp = regs[L.R_ESP]
        new_stack = bool(ist) or new_cpl < cpl
        rsp &= ~0xF
        frame = [e.segment(_SS)[0], regs[L.R_ESP], e.eflags.value, e.segment(_CS)[0], e.rip.value]
        if error_code is not None:
            frame.append(error_code & 0xFFFF_FFFF)
        rsp = (rsp - 8 * len(frame)) & 0xFFFF_FFFF_FFFF_FFFF
        data = struct.pack(f"<{len(frame)}Q", *reversed(frame))
        try:
            self.w.write(rsp, data)
        except GuestFault as f:
            if f.vector == L.EXC_GP:  # non-canonical stack
                raise GuestFault(L.EXC_SS, ext) from None
            raise
        self._finish_flags(gtype & 1)
        if new_stack:
            e.set_segment(_SS, new_cpl, 0, 0, new_cpl << L.DESC_DPL_SHIFT)
        regs[L.R_ESP] = rsp
        e.set_segment(_CS, (selector & ~3) | new_cpl, _base(e1, e2), _limit(e1, e2), e2)
        e.rip.value = offset
        e.update_hflags()

    def _tss64(self, off: int, ext: int) -> int:
        sel, base, limit, _ = self.e.segment(L.TR)
        if off + 7 > limit:
            raise GuestFault(L.EXC_TS, (sel & 0xFFFC) | ext)
        return struct.unpack("<Q", self.w.read(base + off, 8))[0]

    def _finish_flags(self, trap_gate: int) -> None:
        fl = self.e.eflags.value
        if not trap_gate:
            fl &= ~L.IF_MASK
        self.e.eflags.value = fl & ~(L.TF_MASK | L.VM_MASK | L.RF_MASK | L.NT_MASK)

    # --- 32-bit protected mode ---
    def _deliver32(self, vector: int, error_code: int | None, software: bool, ext: int) -> None:
        e = self.e
        e1, e2 = struct.unpack("<II", self._gate(vector, 8, software, ext))
        idt_err = vector * 8 + 2 + ext
        gtype = (e2 >> 8) & 0x1F
        dpl = (e2 >> L.DESC_DPL_SHIFT) & 3
        cpl = e.hflags.value & 3
        if gtype not in (6, 7, 0xE, 0xF):
            raise GuestFault(L.EXC_GP, idt_err)  # task gates are not supported
        if software and dpl < cpl:
            raise GuestFault(L.EXC_GP, idt_err)
        if not e2 & L.DESC_P_MASK:
            raise GuestFault(L.EXC_NP, idt_err)
        shift = gtype >> 3  # 1: 32-bit gate, 0: 16-bit gate
        selector = e1 >> 16
        offset = (e2 & 0xFFFF_0000) | (e1 & 0xFFFF)
        if not shift:
            offset &= 0xFFFF
        c1, c2, new_cpl = self._code_segment(selector, cpl, ext, False)
        regs = e.regs
        if new_cpl < cpl:
            ss_sel, esp, ss1, ss2 = self._tss32_stack(new_cpl, ext)
            ss_base = _base(ss1, ss2)
            sp_mask = 0xFFFF_FFFF if ss2 & L.DESC_B_MASK else 0xFFFF
        else:
            ss_sel, ss_base, _, ss_flags = e.segment(_SS)
            esp = regs[L.R_ESP]
            sp_mask = 0xFFFF_FFFF if ss_flags & L.DESC_B_MASK else 0xFFFF
        frame = []
        if new_cpl < cpl:
            frame += [e.segment(_SS)[0], regs[L.R_ESP]]
        frame += [e.eflags.value, e.segment(_CS)[0], e.rip.value]
        if error_code is not None:
            frame.append(error_code)
        width = 4 if shift else 2
        esp = (esp - width * len(frame)) & sp_mask
        fmt = "<" + ("I" if shift else "H") * len(frame)
        data = struct.pack(fmt, *(v & (0xFFFF_FFFF if shift else 0xFFFF) for v in reversed(frame)))
        try:
            self.w.write((ss_base + esp) & 0xFFFF_FFFF, data)
        except GuestFault as f:
            if f.vector == L.EXC_PF:
                raise
            raise GuestFault(L.EXC_SS, ext) from None
        self._finish_flags(gtype & 1)
        if new_cpl < cpl:
            e.set_segment(_SS, ss_sel, ss_base, _limit(ss1, ss2), ss2)
        regs[L.R_ESP] = (regs[L.R_ESP] & ~sp_mask) | esp
        e.set_segment(_CS, (selector & ~3) | new_cpl, _base(c1, c2), _limit(c1, c2), c2)
        e.rip.value = offset
        e.update_hflags()

    def _tss32_stack(self, dpl: int, ext: int) -> tuple[int, int, int, int]:
        e = self.e
        tr_sel, base, limit, flags = e.segment(L.TR)
        if not (flags >> 8) & 8:
            raise GuestFault(L.EXC_TS, (tr_sel & 0xFFFC) | ext)  # 16-bit TSS: unsupported
        off = 4 + 8 * dpl
        if off + 5 > limit:
            raise GuestFault(L.EXC_TS, (tr_sel & 0xFFFC) | ext)
        esp, ss = struct.unpack("<IH", self.w.read(base + off, 6))
        err = (ss & 0xFFFC) | ext
        if ss & 0xFFFC == 0 or ss & 3 != dpl:
            raise GuestFault(L.EXC_TS, err)
        s1, s2 = self._descriptor(ss, ext)
        if (
            (s2 >> L.DESC_DPL_SHIFT) & 3 != dpl
            or not s2 & L.DESC_S_MASK
            or s2 & L.DESC_CS_MASK
            or not s2 & L.DESC_W_MASK
        ):
            raise GuestFault(L.EXC_TS, err)
        if not s2 & L.DESC_P_MASK:
            raise GuestFault(L.EXC_SS, err)
        return ss, esp, s1, s2

    # --- SYSCALL (unicorn only calls a hook) ---
    def syscall(self, next_rip: int) -> None:
        """Enter the kernel as SYSCALL does; #UD when EFER.SCE is clear."""
        e = self.e
        if not e.efer.value & L.EFER_SCE:
            raise GuestFault(L.EXC_UD, None)
        star = e.u64(L.STAR)
        sel = (star >> 32) & 0xFFFF
        fl = e.eflags.value
        regs = e.regs
        if e.hflags.value & L.HF_LMA_MASK:
            code64 = bool(e.hflags.value & L.HF_CS64_MASK)
            regs[L.R_ECX] = next_rip
            regs[11] = fl
            e.set_segment(
                _CS, sel & 0xFFFC, 0, 0xFFFF_FFFF, _FLAT_CODE | L.DESC_A_MASK | L.DESC_L_MASK
            )
            fl &= ~e.u64(L.FMASK)
            e.rip.value = e.u64(L.LSTAR) if code64 else e.u64(L.CSTAR)
        else:
            regs[L.R_ECX] = next_rip & 0xFFFF_FFFF
            e.set_segment(
                _CS, sel & 0xFFFC, 0, 0xFFFF_FFFF, _FLAT_CODE | L.DESC_A_MASK | L.DESC_B_MASK
            )
            fl &= ~(L.IF_MASK | L.VM_MASK)
            e.rip.value = star & 0xFFFF_FFFF
        e.set_segment(_SS, (sel + 8) & 0xFFFC, 0, 0xFFFF_FFFF, _FLAT_DATA | L.DESC_A_MASK)
        e.eflags.value = (fl & ~L.RF_MASK) | 2
        e.update_hflags()

    def sysenter(self) -> None:
        """Enter the kernel as SYSENTER does (unicorn only calls a hook); #GP(0) when
        IA32_SYSENTER_CS is zero."""
        e = self.e
        sel = e.u32(L.SYSENTER_CS) & 0xFFFF
        if sel & 0xFFFC == 0:
            raise GuestFault(L.EXC_GP, 0)
        code = _FLAT_CODE | L.DESC_A_MASK | L.DESC_B_MASK
        if e.hflags.value & L.HF_LMA_MASK:
            code |= L.DESC_L_MASK
        e.set_segment(_CS, sel & 0xFFFC, 0, 0xFFFF_FFFF, code)
        e.set_segment(_SS, (sel + 8) & 0xFFFC, 0, 0xFFFF_FFFF, _FLAT_DATA | L.DESC_A_MASK)
        e.eflags.value &= ~(L.VM_MASK | L.IF_MASK | L.RF_MASK)
        e.regs[L.R_ESP] = e.u64(L.SYSENTER_ESP)
        e.rip.value = e.u64(L.SYSENTER_EIP)
        e.update_hflags()
