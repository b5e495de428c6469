"""The CPUID table a guest sees: KVM's supported table through a determinism filter.

Every feature that would let the guest observe host state or time outside our seam is hidden
(RDRAND/RDSEED return entropy, TSC-deadline and x2APIC need an APIC we do not give, kvmclock
reads host time). The filtered table goes into the trace header, and the software backend
answers CPUID from the same rows, so a trace replays on either backend.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CpuidRow", "filter_cpuid", "lookup", "with_apic", "CPUID_FEATURES_HIDDEN"]

CpuidRow = tuple[int, int, int, int, int, int, int]  # function, index, flags, eax, ebx, ecx, edx

# (leaf, subleaf, register, bit, why)
CPUID_FEATURES_HIDDEN: tuple[tuple[int, int, str, int, str], ...] = (
    (1, 0, "ecx", 30, "RDRAND: host entropy"),
    (7, 0, "ebx", 18, "RDSEED: host entropy"),
    (1, 0, "ecx", 24, "TSC-deadline timer: needs a LAPIC"),
    (1, 0, "ecx", 21, "x2APIC: no LAPIC in PIC mode"),
    (1, 0, "edx", 9, "APIC: the machine is in PIC mode"),
    (7, 0, "ebx", 11, "RTM: aborts depend on host events"),
    (7, 0, "ebx", 4, "HLE: aborts depend on host events"),
    (7, 0, "ecx", 5, "WAITPKG: timed waits on host time"),
    (0x80000001, 0, "edx", 27, "RDTSCP: TSC_AUX is host state"),
    # the software CPU (unicorn 2.1) raises #UD for these: a trace must replay on both
    (7, 0, "ebx", 23, "CLFLUSHOPT: #UD on the software CPU"),
    (7, 0, "ebx", 24, "CLWB: #UD on the software CPU"),
    (7, 0, "ecx", 2, "UMIP: the software CPU lets CPL 3 run SGDT/SIDT/SLDT/STR"),
    (7, 0, "ecx", 16, "LA57: the software CPU has no 5-level paging"),
    (7, 0, "ebx", 1, "TSC_ADJUST: the software CPU has no IA32_TSC_ADJUST"),
)
_XSAVE_BITS: tuple[tuple[int, int, str, int, str], ...] = (
    (1, 0, "ecx", 26, "XSAVE"),
    (1, 0, "ecx", 27, "OSXSAVE"),
    (1, 0, "ecx", 28, "AVX: needs XSAVE"),
    (7, 0, "ebx", 5, "AVX2: needs XSAVE"),
    (7, 0, "ebx", 16, "AVX512F: needs XSAVE"),
)
_REG_INDEX = {"eax": 3, "ebx": 4, "ecx": 5, "edx": 6}
_HYPERVISOR_LEAVES = range(0x40000000, 0x50000000)


def filter_cpuid(rows: Iterable[CpuidRow], *, hide_xsave: bool = False) -> list[CpuidRow]:
    """Return a new table with the nondeterministic features cleared.

    ``hide_xsave`` also clears XSAVE and the features that need it: KVM's instruction
    emulator (kvm_pvm hosts) cannot execute XRSTOR.
    """
    hidden = CPUID_FEATURES_HIDDEN + (_XSAVE_BITS if hide_xsave else ())
    out: list[CpuidRow] = []
    for row in rows:
        fn, idx = row[0], row[1]
        if fn in _HYPERVISOR_LEAVES:
            continue  # no kvmclock / paravirt features: they read host time
        if hide_xsave and fn == 0xD:
            continue
        regs = list(row)
        for leaf, sub, reg, bit, _why in hidden:
            if fn == leaf and idx == sub:
                regs[_REG_INDEX[reg]] &= ~(1 << bit)
        if fn == 1:
            regs[4] &= 0x00FFFFFF  # initial APIC ID 0: one CPU
        if fn in (0xB, 0x1F):
            regs[6] = 0  # x2APIC ID: the host CPU this thread happened to run on
        out.append(tuple(regs))  # type: ignore[arg-type]
    return out


def with_apic(rows: Iterable[CpuidRow]) -> list[CpuidRow]:
    """The table for a machine with a local APIC (``--apic on``): leaf 1 EDX bit 9 set.

    x2APIC and the TSC-deadline timer stay hidden: both are MSRs, and neither backend
    hands rrvmm a guest's RDMSR/WRMSR of them (unicorn 2.1 has no MSR hook), so the
    device model could not answer them on both backends alike.
    """
    out: list[CpuidRow] = []
    for row in rows:
        if row[0] == 1 and row[1] == 0:
            regs = list(row)
            regs[6] |= 1 << 9
            row = tuple(regs)  # type: ignore[assignment]
        out.append(row)
    return out


def lookup(rows: Iterable[CpuidRow], function: int, index: int) -> tuple[int, int, int, int]:
    """What CPUID returns for (function, index), as the hardware would for a missing leaf."""
    table = list(rows)
    best: CpuidRow | None = None
    for row in table:
        if row[0] == function and (not (row[2] & 1) or row[1] == index):
            best = row
            break
    if best is None:
        max_basic = max((r[3] for r in table if r[0] == 0), default=0)
        if function < 0x80000000 and function > max_basic:
            # Intel: out-of-range basic leaves return the highest basic leaf
            return lookup(table, max_basic, index) if max_basic else (0, 0, 0, 0)
        return (0, 0, 0, 0)
    return best[3], best[4], best[5], best[6]
