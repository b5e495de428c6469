"""The MADT: parsed back entry by entry, reachable from the RSDP, absent unless asked for."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from rrvmm.machine.acpi import (
    AcpiMachine,
    ApicDescription,
    InterruptOverride,
    VirtioMmioSlot,
    build_acpi,
    dump_tables,
    madt,
)

SLOTS = [
    VirtioMmioSlot(0xFEB00000 + 0x200 * i, 0x200, irq) for i, irq in enumerate((10, 11, 5, 14))
]


def parse_madt(table: bytes) -> tuple[int, int, list[tuple[Any, ...]]]:
    """(local APIC address, flags, entries) with every entry's length checked."""
    assert table[:4] == b"APIC"
    length = struct.unpack_from("<I", table, 4)[0]
    assert length == len(table) and sum(table) & 0xFF == 0
    lapic_addr, flags = struct.unpack_from("<II", table, 36)
    pos, entries = 44, []
    while pos < length:
        kind, size = table[pos], table[pos + 1]
        body = table[pos + 2 : pos + size]
        if kind == 0:
            assert size == 8
            entries.append(("lapic", *struct.unpack("<BBI", body)))
        elif kind == 1:
            assert size == 12
            ioapic_id, reserved, addr, gsi = struct.unpack("<BBII", body)
            assert reserved == 0
            entries.append(("ioapic", ioapic_id, addr, gsi))
        elif kind == 2:
            assert size == 10
            entries.append(("override", *struct.unpack("<BBIH", body)))
        elif kind == 4:
            assert size == 6
            entries.append(("nmi", *struct.unpack("<BHB", body)))
        elif kind == 9:
            assert size == 16
            entries.append(("x2apic", *struct.unpack("<HIII", body)[1:]))
        elif kind == 0xA:
            assert size == 12
            entries.append(("x2nmi", *struct.unpack("<HIB3s", body)[:3]))
        else:
            raise AssertionError(f"unexpected MADT entry type {kind}")
        pos += size
    assert pos == length
    return lapic_addr, flags, entries


def test_default_build_has_no_madt() -> None:
    built = build_acpi(AcpiMachine(list(SLOTS)))
    assert "APIC" not in built.tables
    assert len(built.tables["RSDT"]) == 40


def test_single_cpu_madt_as_qemu_describes_a_pc() -> None:
    lapic_addr, flags, entries = parse_madt(madt(ApicDescription(), sci_irq=9))
    assert lapic_addr == 0xFEE00000
    assert flags == 1  # PCAT_COMPAT: the 8259s are there
    assert entries == [
        ("lapic", 0, 0, 1),  # UID 0, APIC ID 0, enabled
        ("ioapic", 0, 0xFEC00000, 0),
        ("override", 0, 0, 2, 0),  # ISA bus, IRQ 0 -> GSI 2, conforms
        ("override", 0, 9, 9, 0x000D),  # SCI: level, active high
        ("nmi", 0xFF, 0, 1),  # all processors, LINT1
    ]


def test_several_cpus_and_x2apic_ids() -> None:
    apic = ApicDescription(lapic_ids=(0, 1, 300), ioapic_id=3, nmi_lint=1, pcat_compat=False)
    _, flags, entries = parse_madt(madt(apic))
    assert flags == 0
    assert entries[:3] == [("lapic", 0, 0, 1), ("lapic", 1, 1, 1), ("x2apic", 300, 1, 2)]
    assert entries[3] == ("ioapic", 3, 0xFEC00000, 0)
    assert entries[-1] == ("x2nmi", 0, 0xFFFFFFFF, 1)
    assert ("override", 0, 9, 9, 0x000D) not in entries  # no SCI given


def test_sci_already_overridden_is_not_repeated() -> None:
    apic = ApicDescription(overrides=(InterruptOverride(0, 2), InterruptOverride(9, 20, 0xF)))
    _, _, entries = parse_madt(madt(apic, sci_irq=9))
    assert [e for e in entries if e[0] == "override"] == [
        ("override", 0, 0, 2, 0),
        ("override", 0, 9, 20, 0xF),
    ]


def test_build_acpi_lists_the_madt_in_rsdt_and_xsdt() -> None:
    built = build_acpi(AcpiMachine(list(SLOTS)), apic=ApicDescription())
    addr = built.addresses["APIC"]
    assert addr % 16 == 0 and addr >= built.addresses["DSDT"] + len(built.tables["DSDT"])
    fadt = built.addresses["FACP"]
    assert struct.unpack_from("<II", built.tables["RSDT"], 36) == (fadt, addr)
    assert struct.unpack_from("<QQ", built.tables["XSDT"], 36) == (fadt, addr)
    for sig in ("RSDT", "XSDT", "APIC"):
        assert sum(built.tables[sig]) & 0xFF == 0
    mem = bytearray(0x100000)
    for at, data in built.blobs:
        assert mem[at : at + len(data)] == bytes(len(data)), f"blob at {at:#x} overlaps"
        mem[at : at + len(data)] = data
    text = dump_tables(lambda a, n: bytes(mem[a : a + n]), built.rsdp_addr)
    assert f"APIC @ 0x{addr:016X}" in text
    assert "APIC length=" in text and "BAD" not in text
    _, _, entries = parse_madt(bytes(mem[addr : addr + len(built.tables["APIC"])]))
    assert ("override", 0, built_sci(), built_sci(), 0x000D) in entries


def built_sci() -> int:
    return AcpiMachine().sci_irq


@pytest.mark.parametrize(
    "apic",
    [
        ApicDescription(lapic_ids=()),
        ApicDescription(lapic_ids=(1, 1)),
        ApicDescription(nmi_lint=2),
        ApicDescription(ioapic_id=256),
        ApicDescription(overrides=(InterruptOverride(16, 2),)),
    ],
)
def test_bad_apic_descriptions_are_rejected(apic: ApicDescription) -> None:
    with pytest.raises(ValueError):
        build_acpi(AcpiMachine(), apic=apic)
