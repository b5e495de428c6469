from __future__ import annotations

from rrvmm.cpu.cpuid import filter_cpuid, lookup, with_apic

ROWS = [
    (0, 0, 0, 0xD, 0x756E6547, 0x6C65746E, 0x49656E69),
    (1, 0, 0, 0x306A9, 0x05100800, 0xFFFFFFFF, 0xFFFFFFFF),
    (7, 0, 1, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0),
    (0xD, 0, 1, 7, 0x340, 0x340, 0),
    (0x40000000, 0, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D),
    (0x80000001, 0, 0, 0, 0, 0x21, 0xFFFFFFFF),
]


def test_nondeterministic_features_are_hidden() -> None:
    out = {(r[0], r[1]): r for r in filter_cpuid(ROWS)}
    leaf1 = out[(1, 0)]
    assert not leaf1[5] & (1 << 30)  # RDRAND
    assert not leaf1[5] & (1 << 24)  # TSC deadline
    assert not leaf1[5] & (1 << 21)  # x2APIC
    assert leaf1[4] >> 24 == 0  # APIC id 0
    assert leaf1[5] & (1 << 26)  # XSAVE kept by default
    assert not out[(7, 0)][4] & (1 << 18)  # RDSEED
    assert not out[(0x80000001, 0)][6] & (1 << 27)  # RDTSCP
    assert (0x40000000, 0) not in out  # no kvmclock / paravirt leaves


def test_hide_xsave_for_the_instruction_emulator() -> None:
    out = {(r[0], r[1]): r for r in filter_cpuid(ROWS, hide_xsave=True)}
    assert not out[(1, 0)][5] & (1 << 26)
    assert not out[(1, 0)][5] & (1 << 28)  # AVX needs XSAVE
    assert (0xD, 0) not in out


def test_lookup_follows_the_hardware_rules() -> None:
    rows = filter_cpuid(ROWS)
    assert lookup(rows, 0, 0)[1] == 0x756E6547
    assert lookup(rows, 7, 0)[1] & 1  # significant index matched
    assert lookup(rows, 0x80000008, 0) == (0, 0, 0, 0)  # missing extended leaf
    assert lookup(rows, 0x20, 0) == lookup(rows, 0xD, 0)  # out-of-range basic leaf


def test_what_the_software_cpu_cannot_run_is_not_offered() -> None:
    """CLFLUSHOPT and CLWB raise #UD on unicorn 2.1 (kvm-unit-tests' memory test), UMIP
    is not enforced and 5-level paging is missing there (its umip and la57 tests)."""
    leaf7 = {(r[0], r[1]): r for r in filter_cpuid(ROWS)}[(7, 0)]
    assert not leaf7[4] & (1 << 23) and not leaf7[4] & (1 << 24)
    assert not leaf7[5] & (1 << 2) and not leaf7[5] & (1 << 16)  # UMIP, LA57
    assert not leaf7[4] & (1 << 1)  # TSC_ADJUST


def test_the_modern_pc_shows_its_apic_but_not_x2apic() -> None:
    leaf1 = {(r[0], r[1]): r for r in with_apic(filter_cpuid(ROWS))}[(1, 0)]
    assert leaf1[6] & (1 << 9)  # APIC
    assert not leaf1[5] & (1 << 21) and not leaf1[5] & (1 << 24)  # x2APIC, TSC-deadline
    plain = {(r[0], r[1]): r for r in filter_cpuid(ROWS)}[(1, 0)]
    assert not plain[6] & (1 << 9)
