"""Register files in the KVM backend's dict formats, read from and written to unicorn's CPU.

Segments convert the way QEMU's KVM code does (``get_seg``/``set_seg``): QEMU keeps the
descriptor's high word as ``flags``; an unusable segment has ``flags == 0``. After any
system-state write QEMU's mode flags are recomputed and the TLB is flushed.
"""

from __future__ import annotations

from rrvmm.cpu.backend import CONTROL_NAMES, GPR_NAMES, SEGMENT_NAMES
from rrvmm.soft import layout as L

__all__ = ["CpuState"]

_SEG_OFF = {n: L.SEGS + L.SEG_SIZE * i for n, i in L.SEG_INDEX.items()}
_SEG_OFF["tr"] = L.TR
_SEG_OFF["ldt"] = L.LDT
_GPR = [(n, L.QEMU_GPR_INDEX[n]) for n in GPR_NAMES if n in L.QEMU_GPR_INDEX]
_ENV_MSRS = {
    L.MSR_STAR: L.STAR, L.MSR_LSTAR: L.LSTAR, L.MSR_CSTAR: L.CSTAR, L.MSR_FMASK: L.FMASK,
    L.MSR_KERNEL_GS_BASE: L.KERNEL_GS_BASE, L.MSR_SYSENTER_ESP: L.SYSENTER_ESP,
    L.MSR_SYSENTER_EIP: L.SYSENTER_EIP, L.MSR_TSC_AUX: L.TSC_AUX, L.MSR_PAT: L.PAT,
}  # fmt: skip
_SEG_BASE_MSRS = {L.MSR_FS_BASE: _SEG_OFF["fs"], L.MSR_GS_BASE: _SEG_OFF["gs"]}


def seg_to_dict(selector: int, base: int, limit: int, flags: int) -> dict[str, int]:
    present = (flags >> 15) & 1
    return {
        "base": base,
        "limit": limit,
        "selector": selector,
        "type": (flags >> 8) & 15,
        "present": present,
        "dpl": (flags >> 13) & 3,
        "db": (flags >> 22) & 1,
        "s": (flags >> 12) & 1,
        "l": (flags >> 21) & 1,
        "g": (flags >> 23) & 1,
        "unusable": 0 if present else 1,
    }


def dict_to_flags(d: dict[str, int]) -> int:
    if d.get("unusable"):
        return 0
    return (
        (d["type"] & 15) << 8
        | (d["s"] & 1) << 12
        | (d["dpl"] & 3) << 13
        | (d["present"] & 1) << 15
        | (d.get("avl", 0) & 1) << 20
        | (d["l"] & 1) << 21
        | (d["db"] & 1) << 22
        | (d["g"] & 1) << 23
    )


class CpuState:
    """Reads and writes register files on an ``Engine``."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - Engine
        self.e = engine
        self.apic_base = 0xFEE0_0900  # what KVM reports: default base, BSP, enabled

    # --- general registers ---
    def get_regs(self) -> dict[str, int]:
        regs = self.e.regs
        out = {n: regs[i] for n, i in _GPR}
        out["rip"] = self.e.rip.value
        out["rflags"] = self.e.eflags.value
        return out

    def set_regs(self, values: dict[str, int]) -> None:
        e = self.e
        for n, v in values.items():
            if n == "rip":
                e.rip.value = v & 0xFFFF_FFFF_FFFF_FFFF
            elif n == "rflags":
                e.eflags.value = (v | 2) & 0xFFFF_FFFF_FFFF_FFFF
            else:
                e.regs[L.QEMU_GPR_INDEX[n]] = v & 0xFFFF_FFFF_FFFF_FFFF
        if "rflags" in values:
            e.update_hflags()  # TF, IOPL and VM are mirrored in hflags

    # --- system registers ---
    def get_sregs(self, pending_vector: int | None) -> dict[str, object]:
        e = self.e
        out: dict[str, object] = {}
        for name in SEGMENT_NAMES:
            out[name] = seg_to_dict(*e.segment(_SEG_OFF[name]))
        out["gdt"] = {"base": e.u64(L.GDT + 8), "limit": e.u32(L.GDT + 16) & 0xFFFF}
        out["idt"] = {"base": e.u64(L.IDT + 8), "limit": e.u32(L.IDT + 16) & 0xFFFF}
        out["cr0"], out["cr2"], out["cr3"] = e.cr[0], e.cr[2], e.cr[3]
        out["cr4"], out["cr8"] = e.cr[4], e.cr[8]
        out["efer"] = e.efer.value
        out["apic_base"] = self.apic_base
        bitmap = [0, 0, 0, 0]
        if pending_vector is not None:
            bitmap[pending_vector // 64] |= 1 << (pending_vector % 64)
        out["interrupt_bitmap"] = bitmap
        return out

    def set_sregs(self, sregs: dict[str, object]) -> int | None:
        """Write what ``sregs`` holds; returns a vector from ``interrupt_bitmap``, if any."""
        e = self.e
        for name in SEGMENT_NAMES:
            fields = sregs.get(name)
            if fields is None:
                continue
            assert isinstance(fields, dict)
            cur = seg_to_dict(*e.segment(_SEG_OFF[name]))
            cur.update(fields)
            if "unusable" not in fields and "present" in fields:
                cur["unusable"] = 0 if cur["present"] else 1
            e.set_segment(
                _SEG_OFF[name], cur["selector"], cur["base"], cur["limit"], dict_to_flags(cur)
            )
        for name, off in (("gdt", L.GDT), ("idt", L.IDT)):
            d = sregs.get(name)
            if d is not None:
                assert isinstance(d, dict)
                e.set_u64(off + 8, d["base"])
                e.set_u32(off + 16, d["limit"] & 0xFFFF)
        for name in CONTROL_NAMES:
            if name not in sregs:
                continue
            v = sregs[name]
            assert isinstance(v, int)
            if name == "efer":
                e.efer.value = v
            elif name == "apic_base":
                self.apic_base = v
            else:
                e.cr[int(name[2:])] = v
        e.update_hflags()
        e.flush_tlb()
        bm = sregs.get("interrupt_bitmap")
        if isinstance(bm, list):
            for i, word in enumerate(bm):
                if word:
                    return i * 64 + (word & -word).bit_length() - 1
        return None

    # --- MSRs ---
    def get_msrs(self, indices: list[int], tsc: int) -> dict[int, int]:
        e = self.e
        out: dict[int, int] = {}
        for idx in indices:
            if idx == L.MSR_EFER:
                out[idx] = e.efer.value
            elif idx in _ENV_MSRS:
                out[idx] = e.u64(_ENV_MSRS[idx])
            elif idx in _SEG_BASE_MSRS:
                out[idx] = e.u64(_SEG_BASE_MSRS[idx] + 8)
            elif idx == L.MSR_SYSENTER_CS:
                out[idx] = e.u32(L.SYSENTER_CS)
            elif idx == L.MSR_TSC:
                out[idx] = tsc
            elif idx == L.MSR_APIC_BASE:
                out[idx] = self.apic_base
            else:
                out[idx] = e.uc.msr_read(idx)
        return out

    def set_msrs(self, values: dict[int, int]) -> None:
        e = self.e
        for idx, v in values.items():
            if idx == L.MSR_EFER:
                e.efer.value = v
                e.update_hflags()
                e.flush_tlb()
            elif idx in _ENV_MSRS:
                e.set_u64(_ENV_MSRS[idx], v)
            elif idx in _SEG_BASE_MSRS:
                e.set_u64(_SEG_BASE_MSRS[idx] + 8, v)
            elif idx == L.MSR_SYSENTER_CS:
                e.set_u32(L.SYSENTER_CS, v)
            elif idx == L.MSR_APIC_BASE:
                self.apic_base = v
            elif idx != L.MSR_TSC:
                e.uc.msr_write(idx, v)
