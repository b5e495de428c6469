"""ACPI tables for the PC-like machine: RSDP, RSDT, XSDT, FADT, FACS and a DSDT.

Linux only finds virtio-mmio transports on x86 through ACPI (``_HID "LNRO0005"`` devices), and
only powers off through ACPI S5, so the machine carries the smallest table set a stock kernel
accepts for both: a full (not hardware-reduced, which would drop the 8259 and PIT) FADT with
PM1a event/control ports, no MADT (the guest stays in 8259 PIC mode), no PM timer (a clock we
would have to record), SMI_CMD = 0 (already in ACPI mode). Layouts follow ACPI 6.x chapter 5;
docs/acpi.md describes the result.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from rrvmm.devices.acpi_pm import S5_SLP_TYP
from rrvmm.machine.acpi import aml

__all__ = [
    "AcpiMachine",
    "AcpiTables",
    "ApicDescription",
    "InterruptOverride",
    "VirtioMmioSlot",
    "build_acpi",
    "checksum",
    "dump_tables",
    "dsdt_body",
    "madt",
]

OEM_ID = b"RRVMM "
CREATOR_ID = b"RRVM"
CREATOR_REVISION = 1
OEM_REVISION = 1

BIOS_AREA_START = 0xE0000
BIOS_AREA_END = 0x100000

HEADER_LEN = 36
RSDP_LEN = 36
RSDP_V1_LEN = 20
FACS_LEN = 64
FADT_REVISION = 6  # ACPI 6.x layout, 276 bytes with the hypervisor vendor id
FADT_MINOR_REVISION = 4
FADT_LEN = 276
DSDT_REVISION = 2  # >= 2: AML integers are 64 bits wide

# Generic Address Structure address space ids and access sizes.
GAS_SYSTEM_IO = 1
GAS_ACCESS_WORD = 2

# FADT Flags.
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4  # 1: no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5  # 1: no fixed-feature sleep button
FADT_FIX_RTC = 1 << 6  # 1: no RTC wake status in PM1
FADT_HW_REDUCED_ACPI = 1 << 20
# FADT IAPC_BOOT_ARCH.
BOOT_ARCH_LEGACY_DEVICES = 1 << 0
BOOT_ARCH_8042 = 1 << 1
BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2

# P_LVL2_LAT > 100 and P_LVL3_LAT > 1000 say C2 and C3 are not supported.
C2_NOT_SUPPORTED = 101
C3_NOT_SUPPORTED = 1001


@dataclass(frozen=True)
class VirtioMmioSlot:
    """One virtio-mmio transport: its register window and its (8259) interrupt line."""

    base: int
    size: int
    irq: int


@dataclass(frozen=True)
class AcpiMachine:
    """What the tables describe; the ports must match where the machine maps ``AcpiPm``."""

    virtio_mmio: list[VirtioMmioSlot] = field(default_factory=list)
    sci_irq: int = 9
    pm1a_evt_port: int = 0x600
    pm1a_cnt_port: int = 0x604


# MADT (ACPI 6.x 5.2.12).
MADT_REVISION = 5
MADT_PCAT_COMPAT = 1 << 0  # the 8259 pair is present (and must be masked to use the APICs)
MADT_LAPIC = 0
MADT_IOAPIC = 1
MADT_OVERRIDE = 2
MADT_LAPIC_NMI = 4
MADT_X2APIC = 9
MADT_X2APIC_NMI = 0xA
MADT_ENABLED = 1 << 0
MADT_ALL_PROCESSORS = 0xFF  # LAPIC NMI processor UID meaning "all"
# MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2.
INTI_CONFORMS = 0
INTI_ACTIVE_HIGH = 0b01
INTI_ACTIVE_LOW = 0b11
INTI_EDGE = 0b01 << 2
INTI_LEVEL = 0b11 << 2


@dataclass(frozen=True)
class InterruptOverride:
    """An ISA IRQ that does not arrive on the I/O APIC pin of the same number, or not edge/high."""

    irq: int
    gsi: int
    flags: int = INTI_CONFORMS


@dataclass(frozen=True)
class ApicDescription:
    """The APIC side of the machine, for the MADT: one LAPIC per CPU and one I/O APIC.

    ``overrides`` defaults to the PC's: ISA IRQ 0 (the PIT) on GSI 2, as on QEMU and real
    chipsets; the SCI's override (level, active high, as QEMU's) is added by ``build_acpi``
    from the machine's ``sci_irq``.  ``nmi_lint`` says which LINT pin carries the NMI.
    """

    lapic_ids: tuple[int, ...] = (0,)
    lapic_address: int = 0xFEE00000
    ioapic_id: int = 0
    ioapic_address: int = 0xFEC00000
    gsi_base: int = 0
    overrides: tuple[InterruptOverride, ...] = (InterruptOverride(0, 2),)
    nmi_lint: int = 1
    pcat_compat: bool = True


@dataclass
class AcpiTables:
    """The built tables: ``blobs`` go into guest RAM; ``tables``/``addresses`` are for tests.

    ``tables`` and ``addresses`` are keyed by signature, with ``"RSDP"`` for the root pointer.
    """

    rsdp_addr: int
    blobs: list[tuple[int, bytes]]
    tables: dict[str, bytes]
    addresses: dict[str, int]


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` (with a zero checksum byte) sum to 0 mod 256."""
    return (-sum(data)) & 0xFF


def _with_checksum(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] = 0
    out[offset] = checksum(out)
    return bytes(out)


def _sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A System Description Table: 36-byte header + ``body``, checksummed."""
    header = struct.pack(
        "<4sIBB6s8sI4sI",
        signature,
        HEADER_LEN + len(body),
        revision,
        0,
        OEM_ID,
        b"RRVM" + signature,  # OEM table id, like Bochs' "BXPCFACP"
        OEM_REVISION,
        CREATOR_ID,
        CREATOR_REVISION,
    )
    return _with_checksum(header + body, 9)


def _gas(space: int, bit_width: int, access_size: int, address: int) -> bytes:
    return struct.pack("<BBBBQ", space, bit_width, 0, access_size, address)


def _rsdp(rsdt_addr: int, xsdt_addr: int) -> bytes:
    raw = struct.pack(
        "<8sB6sBIIQB3s", b"RSD PTR ", 0, OEM_ID, 2, rsdt_addr, RSDP_LEN, xsdt_addr, 0, b"\0\0\0"
    )
    raw = _with_checksum(raw[:RSDP_V1_LEN], 8) + raw[RSDP_V1_LEN:]
    return _with_checksum(raw, 32)


def _facs() -> bytes:
    # Signature, length, hardware signature, waking vector, global lock, flags,
    # X waking vector, version 2, reserved, OSPM flags, reserved.
    return struct.pack("<4sIIIIIQB3sI24s", b"FACS", FACS_LEN, 0, 0, 0, 0, 0, 2, b"", 0, b"")


def _fadt(machine: AcpiMachine, facs_addr: int, dsdt_addr: int) -> bytes:
    body = bytearray(FADT_LEN - HEADER_LEN)

    def put(offset: int, fmt: str, *values: int | bytes) -> None:
        struct.pack_into("<" + fmt, body, offset - HEADER_LEN, *values)

    # FIRMWARE_CTRL stays 0: ACPI 6.x 5.2.9 requires it to be zero when X_FIRMWARE_CTRL is
    # set (Linux would otherwise install the FACS twice).
    put(36, "I", 0)
    put(40, "I", dsdt_addr)  # DSDT
    put(45, "B", 0)  # Preferred_PM_Profile: unspecified
    put(46, "H", machine.sci_irq)  # SCI_INT
    put(48, "I", 0)  # SMI_CMD: none, so the machine is always in ACPI mode
    put(56, "I", machine.pm1a_evt_port)  # PM1a_EVT_BLK
    put(64, "I", machine.pm1a_cnt_port)  # PM1a_CNT_BLK
    put(76, "I", 0)  # PM_TMR_BLK: none
    put(88, "BBBB", 4, 2, 0, 0)  # PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN
    put(96, "HH", C2_NOT_SUPPORTED, C3_NOT_SUPPORTED)  # P_LVL2_LAT, P_LVL3_LAT
    put(108, "B", 0)  # CENTURY: no century register in CMOS
    put(109, "H", BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT)
    flags = FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_FIX_RTC
    put(112, "I", flags)
    put(131, "B", FADT_MINOR_REVISION)
    put(132, "Q", facs_addr)  # X_FIRMWARE_CTRL
    put(140, "Q", dsdt_addr)  # X_DSDT
    put(148, "12s", _gas(GAS_SYSTEM_IO, 32, GAS_ACCESS_WORD, machine.pm1a_evt_port))
    put(172, "12s", _gas(GAS_SYSTEM_IO, 16, GAS_ACCESS_WORD, machine.pm1a_cnt_port))
    return _sdt(b"FACP", FADT_REVISION, bytes(body))


def madt(apic: ApicDescription, sci_irq: int | None = None) -> bytes:
    """The MADT ("APIC"): LAPICs (x2APIC entries for IDs above 254), the I/O APIC, the
    interrupt source overrides (plus the SCI's, level/active-high, when ``sci_irq`` is
    given and not already overridden) and the LAPIC NMI on ``nmi_lint`` for all CPUs."""
    entries = []
    for uid, apic_id in enumerate(apic.lapic_ids):
        if apic_id < 0xFF and uid < 0xFF:
            entries.append(struct.pack("<BBBBI", MADT_LAPIC, 8, uid, apic_id, MADT_ENABLED))
        else:
            entries.append(struct.pack("<BBHIII", MADT_X2APIC, 16, 0, apic_id, MADT_ENABLED, uid))
    entries.append(
        struct.pack(
            "<BBBBII", MADT_IOAPIC, 12, apic.ioapic_id, 0, apic.ioapic_address, apic.gsi_base
        )
    )
    overrides = list(apic.overrides)
    if sci_irq is not None and all(o.irq != sci_irq for o in overrides):
        overrides.append(InterruptOverride(sci_irq, sci_irq, INTI_LEVEL | INTI_ACTIVE_HIGH))
    for o in overrides:
        entries.append(struct.pack("<BBBBIH", MADT_OVERRIDE, 10, 0, o.irq, o.gsi, o.flags))
    entries.append(
        struct.pack("<BBBHB", MADT_LAPIC_NMI, 6, MADT_ALL_PROCESSORS, INTI_CONFORMS, apic.nmi_lint)
    )
    if any(i >= 0xFF for i in apic.lapic_ids):
        entries.append(
            struct.pack("<BBHIB3s", MADT_X2APIC_NMI, 12, 0, 0xFFFFFFFF, apic.nmi_lint, b"")
        )
    flags = MADT_PCAT_COMPAT if apic.pcat_compat else 0
    body = struct.pack("<II", apic.lapic_address, flags) + b"".join(entries)
    return _sdt(b"APIC", MADT_REVISION, body)


def _check_apic(apic: ApicDescription) -> None:
    if not apic.lapic_ids or len(set(apic.lapic_ids)) != len(apic.lapic_ids):
        raise ValueError("MADT: local APIC IDs must be present and distinct")
    if any(not 0 <= i < 0xFFFFFFFF for i in apic.lapic_ids):
        raise ValueError("MADT: a local APIC ID is out of range")
    if not 0 <= apic.ioapic_id < 0x100 or apic.nmi_lint not in (0, 1):
        raise ValueError("MADT: bad I/O APIC ID or NMI LINT pin")
    for o in apic.overrides:
        if not 0 <= o.irq < 16 or not 0 <= o.gsi < 2**32 or not 0 <= o.flags < 0x10:
            raise ValueError(f"MADT: bad interrupt source override {o}")


def dsdt_body(machine: AcpiMachine) -> bytes:
    """The DSDT's AML: one LNRO0005 device per virtio-mmio slot under \\_SB, and \\_S5."""
    devices = [
        aml.device(
            f"VR{i:02X}",
            aml.name("_HID", aml.string("LNRO0005")),
            aml.name("_UID", aml.integer(i)),
            aml.name(
                "_CRS",
                aml.resource_template(
                    aml.memory32_fixed(slot.base, slot.size, writeable=True),
                    aml.extended_interrupt(slot.irq, level=True, active_low=False),
                ),
            ),
        )
        for i, slot in enumerate(machine.virtio_mmio)
    ]
    s5 = aml.package(*(aml.integer(v) for v in (S5_SLP_TYP, S5_SLP_TYP, 0, 0)))
    return aml.scope("\\_SB", *devices) + aml.name("\\_S5", s5)


def _check(machine: AcpiMachine) -> None:
    if len(machine.virtio_mmio) > 256:
        raise ValueError("at most 256 virtio-mmio slots (device names VR00-VRFF)")
    for slot in machine.virtio_mmio:
        if not 0 <= slot.irq < 16:
            raise ValueError(f"virtio-mmio IRQ {slot.irq} is not an 8259 line (0-15)")
        if slot.size <= 0:
            raise ValueError(f"virtio-mmio slot at {slot.base:#x} has no size")
    if not 0 <= machine.sci_irq < 16:
        raise ValueError(f"SCI IRQ {machine.sci_irq} is not an 8259 line (0-15)")


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def build_acpi(
    machine: AcpiMachine, base: int = BIOS_AREA_START, *, apic: ApicDescription | None = None
) -> AcpiTables:
    """Lay out every table from ``base`` upwards, inside the 0xE0000-0xFFFFF BIOS area.

    The RSDP comes first at ``base`` (16-byte aligned, where Linux's scan looks for it), then
    the FACS (64-byte aligned, as the spec requires), then the rest 16-byte aligned.  With
    ``apic`` the set gains a MADT after the DSDT, listed in the RSDT/XSDT after the FADT; a
    guest then finds its local and I/O APICs (without one it stays in 8259 PIC mode).
    """
    _check(machine)
    if apic is not None:
        _check_apic(apic)
    if base % 16 or not BIOS_AREA_START <= base < BIOS_AREA_END:
        raise ValueError(f"RSDP base {base:#x} is not 16-byte aligned in 0xE0000-0xFFFFF")
    dsdt = _sdt(b"DSDT", DSDT_REVISION, dsdt_body(machine))
    facs = _facs()
    rsdp_addr = base
    facs_addr = _align(rsdp_addr + RSDP_LEN, 64)
    apic_table = None if apic is None else madt(apic, machine.sci_irq)
    listed = 1 if apic_table is None else 2
    fadt_addr = _align(facs_addr + FACS_LEN, 16)
    rsdt_addr = _align(fadt_addr + FADT_LEN, 16)
    xsdt_addr = _align(rsdt_addr + HEADER_LEN + 4 * listed, 16)
    dsdt_addr = _align(xsdt_addr + HEADER_LEN + 8 * listed, 16)
    end = dsdt_addr + len(dsdt)
    madt_addr = _align(end, 16)
    if apic_table is not None:
        end = madt_addr + len(apic_table)
    if end > BIOS_AREA_END:
        raise ValueError(f"ACPI tables end at {end:#x}, past 0xFFFFF")
    fadt = _fadt(machine, facs_addr, dsdt_addr)
    entries = [fadt_addr] if apic_table is None else [fadt_addr, madt_addr]
    rsdt = _sdt(b"RSDT", 1, struct.pack(f"<{listed}I", *entries))
    xsdt = _sdt(b"XSDT", 1, struct.pack(f"<{listed}Q", *entries))
    rsdp = _rsdp(rsdt_addr, xsdt_addr)
    placed = {
        "RSDP": (rsdp_addr, rsdp),
        "FACS": (facs_addr, facs),
        "FACP": (fadt_addr, fadt),
        "RSDT": (rsdt_addr, rsdt),
        "XSDT": (xsdt_addr, xsdt),
        "DSDT": (dsdt_addr, dsdt),
    }
    if apic_table is not None:
        placed["APIC"] = (madt_addr, apic_table)
    return AcpiTables(
        rsdp_addr=rsdp_addr,
        blobs=list(placed.values()),
        tables={sig: data for sig, (_, data) in placed.items()},
        addresses={sig: addr for sig, (addr, _) in placed.items()},
    )


# --- dump -----------------------------------------------------------------------------------

_MAX_TABLE_LEN = 1 << 20  # anything longer is a corrupt header, not a table worth dumping


def _hexdump(data: bytes) -> list[str]:
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = " ".join(f"{b:02X}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"  {off:04X}: {hexes:<47}  {text}")
    return lines


def _ok(data: bytes) -> str:
    return "OK" if sum(data) & 0xFF == 0 else "BAD"


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace")


def dump_tables(read: Callable[[int, int], bytes], rsdp_addr: int) -> str:
    """An acpidump-style listing of the tables reachable from the RSDP in guest memory.

    Walks RSDP -> XSDT (RSDT when the RSDP is revision 0 or has no XSDT) -> each table, and
    the FADT's DSDT and FACS, so it shows what the guest would find, not what we built.
    """
    out: list[str] = []
    rsdp = read(rsdp_addr, RSDP_LEN)
    if rsdp[:8] != b"RSD PTR ":
        raise ValueError(f"no RSDP signature at {rsdp_addr:#x}: {rsdp[:8]!r}")
    revision = rsdp[15]
    rsdt_addr = struct.unpack_from("<I", rsdp, 16)[0]
    if revision >= 2:
        length, xsdt_addr = struct.unpack_from("<IQ", rsdp, 20)
        rsdp = read(rsdp_addr, max(length, RSDP_LEN)) if length < _MAX_TABLE_LEN else rsdp
        ext = f" extended checksum {_ok(rsdp[:length])}"
    else:
        rsdp, xsdt_addr, ext = rsdp[:RSDP_V1_LEN], 0, ""
    out.append(f"RSDP @ 0x{rsdp_addr:016X}")
    out.append(
        f"  RSDP revision={revision} oem='{_ascii(rsdp[9:15])}' rsdt=0x{rsdt_addr:X} "
        f"xsdt=0x{xsdt_addr:X} checksum {_ok(rsdp[:RSDP_V1_LEN])}{ext}"
    )
    out.extend(_hexdump(rsdp))

    seen: set[int] = set()

    def table(addr: int) -> bytes | None:
        if addr == 0 or addr in seen:
            return None
        seen.add(addr)
        head = read(addr, 8)
        sig = _ascii(head[:4])
        length = struct.unpack_from("<I", head, 4)[0]
        out.append("")
        out.append(f"{sig} @ 0x{addr:016X}")
        if not 8 <= length <= _MAX_TABLE_LEN:
            out.append(f"  {sig} length={length} implausible, not dumped")
            return None
        data = read(addr, length)
        if sig == "FACS":  # no checksum, no standard header
            version = data[32] if length > 32 else 0
            out.append(f"  FACS length={length} version={version}")
        elif length < HEADER_LEN:
            out.append(f"  {sig} length={length} shorter than a header")
        else:
            out.append(
                f"  {sig} length={length} revision={data[8]} oem='{_ascii(data[10:16])}' "
                f"table='{_ascii(data[16:24])}' checksum {_ok(data)}"
            )
        out.extend(_hexdump(data))
        return data

    use_xsdt = xsdt_addr != 0
    root = table(xsdt_addr if use_xsdt else rsdt_addr)
    entries: list[int] = []
    if root is not None and len(root) >= HEADER_LEN:
        width = 8 if use_xsdt else 4
        count = (len(root) - HEADER_LEN) // width
        fmt = "<" + ("Q" if use_xsdt else "I") * count
        entries = list(struct.unpack_from(fmt, root, HEADER_LEN))
    for addr in entries:
        data = table(addr)
        if data is None or data[:4] != b"FACP":
            continue
        for x_off, off in ((140, 40), (132, 36)):  # DSDT, then FACS
            target = struct.unpack_from("<Q", data, x_off)[0] if len(data) >= x_off + 8 else 0
            if target == 0 and len(data) >= off + 4:
                target = struct.unpack_from("<I", data, off)[0]
            table(target)
    return "\n".join(out) + "\n"
