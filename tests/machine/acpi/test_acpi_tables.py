"""The ACPI table set: checksums, pointers, FADT fields and the DSDT's virtio-mmio devices."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from rrvmm.devices.acpi_pm import S5_SLP_TYP
from rrvmm.machine.acpi import AcpiMachine, AcpiTables, VirtioMmioSlot, build_acpi, dump_tables

# The machine the integrator wires up.
SLOTS = [
    VirtioMmioSlot(0xFEB00000, 0x200, 10),
    VirtioMmioSlot(0xFEB00200, 0x200, 11),
    VirtioMmioSlot(0xFEB00400, 0x200, 5),
    VirtioMmioSlot(0xFEB00600, 0x200, 14),
]


@pytest.fixture
def machine() -> AcpiMachine:
    return AcpiMachine(list(SLOTS))


@pytest.fixture
def built(machine: AcpiMachine) -> AcpiTables:
    return build_acpi(machine)


def guest_memory(tables: AcpiTables) -> bytearray:
    """The low megabyte with the blobs written where the machine would write them."""
    mem = bytearray(0x100000)
    for addr, data in tables.blobs:
        assert mem[addr : addr + len(data)] == bytes(len(data)), f"blob at {addr:#x} overlaps"
        mem[addr : addr + len(data)] = data
    return mem


def u32(data: bytes, off: int) -> int:
    return struct.unpack_from("<I", data, off)[0]


def u64(data: bytes, off: int) -> int:
    return struct.unpack_from("<Q", data, off)[0]


def test_everything_lies_in_the_bios_area_and_the_rsdp_is_where_linux_scans(
    built: AcpiTables,
) -> None:
    for addr, data in built.blobs:
        assert 0xE0000 <= addr and addr + len(data) <= 0x100000
    assert built.rsdp_addr == 0xE0000 and built.rsdp_addr % 16 == 0
    assert built.addresses["FACS"] % 64 == 0
    assert dict(built.blobs) == {built.addresses[s]: t for s, t in built.tables.items()}


def test_rsdp_checksums_and_pointers(built: AcpiTables) -> None:
    rsdp = built.tables["RSDP"]
    assert rsdp[:8] == b"RSD PTR " and len(rsdp) == 36
    assert sum(rsdp[:20]) & 0xFF == 0  # ACPI 1.0 checksum over the first 20 bytes
    assert sum(rsdp) & 0xFF == 0  # extended checksum over all 36
    assert rsdp[15] == 2 and u32(rsdp, 20) == 36
    assert u32(rsdp, 16) == built.addresses["RSDT"]
    assert u64(rsdp, 24) == built.addresses["XSDT"]


def test_every_table_checksums_to_zero(built: AcpiTables) -> None:
    for sig in ("RSDT", "XSDT", "FACP", "DSDT"):
        table = built.tables[sig]
        assert table[:4] == sig.encode() and u32(table, 4) == len(table)
        assert sum(table) & 0xFF == 0, sig
        assert table[10:16] == b"RRVMM "
    facs = built.tables["FACS"]
    assert facs[:4] == b"FACS" and u32(facs, 4) == 64 == len(facs)


def test_rsdt_and_xsdt_list_the_fadt(built: AcpiTables) -> None:
    fadt = built.addresses["FACP"]
    assert struct.unpack_from("<I", built.tables["RSDT"], 36) == (fadt,)
    assert struct.unpack_from("<Q", built.tables["XSDT"], 36) == (fadt,)


def test_fadt_points_at_dsdt_and_facs(built: AcpiTables) -> None:
    fadt = built.tables["FACP"]
    assert u32(fadt, 40) == u64(fadt, 140) == built.addresses["DSDT"]  # DSDT, X_DSDT
    # X_FIRMWARE_CTRL only: the spec wants FIRMWARE_CTRL zero when the X_ field is set.
    assert (u32(fadt, 36), u64(fadt, 132)) == (0, built.addresses["FACS"])


def test_fadt_is_a_full_pc_not_hardware_reduced(built: AcpiTables) -> None:
    fadt = built.tables["FACP"]
    assert fadt[8] >= 5 and len(fadt) == 276
    flags = u32(fadt, 112)
    assert not flags & (1 << 20), "hardware-reduced would make Linux drop the 8259 and PIT"
    assert flags & (1 << 4) and flags & (1 << 5), "no fixed power/sleep buttons"
    boot_arch = struct.unpack_from("<H", fadt, 109)[0]
    assert boot_arch & 0b111 == 0b111  # legacy devices, i8042, no VGA
    assert u32(fadt, 48) == 0, "no SMI_CMD: always in ACPI mode"
    assert u32(fadt, 76) == 0 and fadt[91] == 0, "no PM timer"


def test_fadt_pm_ports_match_the_description() -> None:
    machine = AcpiMachine(list(SLOTS), sci_irq=9, pm1a_evt_port=0x700, pm1a_cnt_port=0x704)
    fadt = build_acpi(machine).tables["FACP"]
    assert struct.unpack_from("<H", fadt, 46) == (9,)
    assert (u32(fadt, 56), u32(fadt, 64)) == (0x700, 0x704)
    assert (fadt[88], fadt[89]) == (4, 2)  # PM1_EVT_LEN, PM1_CNT_LEN
    # X_PM1a_EVT_BLK and X_PM1a_CNT_BLK: SystemIO, bit widths agreeing with the lengths.
    assert struct.unpack_from("<BBBBQ", fadt, 148) == (1, 32, 0, 2, 0x700)
    assert struct.unpack_from("<BBBBQ", fadt, 172) == (1, 16, 0, 2, 0x704)


def test_dsdt_has_one_lnro0005_device_per_slot(built: AcpiTables, aml_reader) -> None:
    dsdt = built.tables["DSDT"]
    assert dsdt[8] >= 2  # 64-bit integers
    terms = aml_reader.read_terms(dsdt, 36)
    [sb] = [t for t in terms if t.kind == "Scope"]
    assert sb.name == "\\_SB_"
    assert len(sb.children) == len(SLOTS)
    for uid, (device, slot) in enumerate(zip(sb.children, SLOTS, strict=True)):
        assert device.kind == "Device"
        names = {t.name: t.value for t in device.children}
        assert set(names) == {"_HID", "_UID", "_CRS"}
        assert names["_HID"].value == "LNRO0005"
        assert names["_UID"].value == uid
        assert aml_reader.read_resources(names["_CRS"].value) == [
            ("Memory32Fixed", 1, slot.base, slot.size),
            ("Interrupt", 0x01, [slot.irq]),  # consumer, level, active high, exclusive
        ]
    assert len({d.name for d in sb.children}) == len(SLOTS)


def test_dsdt_declares_s5_with_the_slp_typ_acpi_pm_powers_off_on(
    built: AcpiTables, aml_reader
) -> None:
    terms = aml_reader.read_terms(built.tables["DSDT"], 36)
    [s5] = [t for t in terms if t.name == "\\_S5_"]
    assert [e.value for e in s5.value.children] == [S5_SLP_TYP, S5_SLP_TYP, 0, 0]


def test_no_slots_still_gives_a_valid_dsdt(aml_reader) -> None:
    built = build_acpi(AcpiMachine([]))
    [sb, _s5] = aml_reader.read_terms(built.tables["DSDT"], 36)
    assert sb.children == []


@pytest.mark.parametrize(
    ("machine", "base"),
    [
        (AcpiMachine([VirtioMmioSlot(0xFEB00000, 0x200, 16)]), 0xE0000),  # not an 8259 line
        (AcpiMachine([VirtioMmioSlot(0xFEB00000, 0, 5)]), 0xE0000),
        (AcpiMachine([], sci_irq=20), 0xE0000),
        (AcpiMachine([]), 0xE0008),  # RSDP not on a 16-byte boundary
        (AcpiMachine([]), 0xD0000),  # outside the BIOS area
        (AcpiMachine([]), 0xFFFF0),  # does not fit below 1 MiB
    ],
)
def test_bad_descriptions_are_rejected(machine: AcpiMachine, base: int) -> None:
    with pytest.raises(ValueError):
        build_acpi(machine, base)


def test_another_base_moves_everything(machine: AcpiMachine) -> None:
    built = build_acpi(machine, base=0xF0000)
    assert built.rsdp_addr == 0xF0000
    assert min(built.addresses.values()) == 0xF0000
    assert u32(built.tables["FACP"], 40) == built.addresses["DSDT"]


def test_dump_tables_walks_from_the_rsdp(built: AcpiTables) -> None:
    mem = guest_memory(built)
    text = dump_tables(lambda addr, n: bytes(mem[addr : addr + n]), built.rsdp_addr)
    for sig in ("RSDP", "XSDT", "FACP", "DSDT", "FACS"):
        assert f"{sig} @ 0x{built.addresses[sig]:016X}" in text
    # RSDP (20-byte and extended), XSDT, FACP, DSDT; the FACS has no checksum.
    assert text.count("checksum OK") == 5
    assert "extended checksum OK" in text
    assert "FACP length=276 revision=6 oem='RRVMM ' table='RRVMFACP' checksum OK" in text
    assert "BAD" not in text
    assert "  0000: 46 41 43 50" in text  # "FACP"


def test_dump_tables_reports_a_corrupt_table(built: AcpiTables) -> None:
    mem = guest_memory(built)
    mem[built.addresses["DSDT"] + 40] ^= 0xFF
    text = dump_tables(lambda addr, n: bytes(mem[addr : addr + n]), built.rsdp_addr)
    assert "DSDT length=" in text and text.count("checksum BAD") == 1


def test_dump_tables_without_an_rsdp_says_so() -> None:
    with pytest.raises(ValueError, match="no RSDP"):
        dump_tables(lambda addr, n: bytes(n), 0xE0000)


@pytest.mark.skipif(shutil.which("iasl") is None, reason="iasl (acpica-tools) is not installed")
def test_iasl_disassembles_the_dsdt(built: AcpiTables, tmp_path: Path) -> None:
    (tmp_path / "dsdt.dat").write_bytes(built.tables["DSDT"])
    (tmp_path / "facp.dat").write_bytes(built.tables["FACP"])
    for name in ("dsdt", "facp"):
        subprocess.run(["iasl", "-d", f"{name}.dat"], cwd=tmp_path, check=True, capture_output=True)
    asl = (tmp_path / "dsdt.dsl").read_text()
    assert asl.count('Name (_HID, "LNRO0005")') == len(SLOTS)
    assert "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive" in asl
    assert "0xFEB00600," in asl and "Name (\\_S5, Package (0x04)" in asl
    facp = (tmp_path / "facp.dsl").read_text()
    assert "Hardware Reduced (V5) : 0" in facp
    assert "PM1A Control Block Address : 00000604" in facp


def test_docs_layout_table_matches_the_build(built: AcpiTables) -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "acpi.md").read_text()
    rows = re.findall(
        r"^\| (RSDP|FACS|FACP|RSDT|XSDT|DSDT) \| (0x[0-9A-F]+) \| (\d+) \|", doc, re.M
    )
    documented = {sig: (int(addr, 16), int(length)) for sig, addr, length in rows}
    assert documented == {s: (built.addresses[s], len(t)) for s, t in built.tables.items()}
