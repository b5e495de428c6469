"""The PM1a register block: what ACPICA reads at boot and the S5 write that powers off."""

from __future__ import annotations

import pytest

from rrvmm.devices.acpi_pm import S5_SLP_TYP, AcpiPm
from rrvmm.devices.bus import Bus, Device
from rrvmm.devices.state import restore, snapshot

PM1A_EVT = 0x600
PM1A_STS, PM1A_EN, PM1A_CNT = 0x600, 0x602, 0x604
SCI_EN = 1 << 0
SLP_EN = 1 << 13
WAK_STS = 1 << 15


class PmPorts:
    """An AcpiPm mapped at 0x600 (length 6) as the machine maps it, with port helpers."""

    def __init__(self) -> None:
        self.sleeps: list[int] = []
        self.pm = AcpiPm(on_sleep=self.sleeps.append)
        self.bus = Bus()
        self.bus.insert(self.pm, PM1A_EVT, 6)

    def inp(self, port: int, size: int = 2) -> int:
        device, offset = self.bus.resolve(port)
        return device.pio_read(offset, size)

    def out(self, port: int, value: int, size: int = 2) -> None:
        device, offset = self.bus.resolve(port)
        device.pio_write(offset, size, value)


@pytest.fixture
def ports() -> PmPorts:
    return PmPorts()


def test_is_a_device_with_plain_state(ports: PmPorts) -> None:
    assert isinstance(ports.pm, Device)
    assert snapshot(ports.pm) == {"pm1_sts": 0, "pm1_en": 0, "pm1_cnt": 0}


def test_sci_en_always_reads_one(ports: PmPorts) -> None:
    assert ports.inp(PM1A_CNT) == SCI_EN
    ports.out(PM1A_CNT, 0)  # ACPI mode cannot be left: there is no SMI_CMD
    assert ports.inp(PM1A_CNT) & SCI_EN
    assert ports.inp(PM1A_CNT, 1) == SCI_EN


def test_status_bits_are_write_one_to_clear(ports: PmPorts) -> None:
    ports.pm.state.pm1_sts = WAK_STS | 0x0021
    ports.out(PM1A_STS, 0x0001)
    assert ports.inp(PM1A_STS) == WAK_STS | 0x0020
    ports.out(PM1A_STS, 0)  # writing zeros changes nothing
    assert ports.inp(PM1A_STS) == WAK_STS | 0x0020
    ports.out(PM1A_STS, 0xFFFF)  # what ACPICA writes at boot
    assert ports.inp(PM1A_STS) == 0


def test_enable_bits_stick(ports: PmPorts) -> None:
    # ACPICA probes for the global lock by whether GBL_EN (bit 5) reads back.
    ports.out(PM1A_EN, 1 << 5)
    assert ports.inp(PM1A_EN) == 1 << 5
    ports.out(PM1A_EN + 1, 0x01, size=1)  # a byte write to the high half
    assert ports.inp(PM1A_EN) == 0x0120


def test_slp_en_with_s5_calls_on_sleep(ports: PmPorts) -> None:
    # What Linux's acpi_hw_legacy_sleep does: SLP_TYP first, then SLP_TYP | SLP_EN.
    slp_typ = S5_SLP_TYP << 10
    ports.out(PM1A_CNT, SCI_EN | slp_typ)
    assert ports.sleeps == []
    ports.out(PM1A_CNT, SCI_EN | slp_typ | SLP_EN)
    assert ports.sleeps == [S5_SLP_TYP] == [5]
    assert ports.inp(PM1A_CNT) == SCI_EN | slp_typ  # SLP_EN is write-only


def test_a_write_without_slp_en_does_not_sleep(ports: PmPorts) -> None:
    for value in (S5_SLP_TYP << 10, 0x1C00, 0x0002, 0xFFFF & ~SLP_EN):
        ports.out(PM1A_CNT, value)
    assert ports.sleeps == []


def test_other_sleep_types_are_reported_as_they_are(ports: PmPorts) -> None:
    ports.out(PM1A_CNT, (3 << 10) | SLP_EN)
    assert ports.sleeps == [3]


def test_byte_write_of_the_high_half_can_power_off(ports: PmPorts) -> None:
    ports.out(PM1A_CNT + 1, (S5_SLP_TYP << 2) | (SLP_EN >> 8), size=1)
    assert ports.sleeps == [S5_SLP_TYP]


def test_dword_access_spans_sts_and_en(ports: PmPorts) -> None:
    ports.out(PM1A_STS, 0x0003_0000, size=4)  # clears nothing, enables bits 0-1
    assert ports.inp(PM1A_STS, 4) == 0x0003_0000


def test_bytes_past_the_block_read_all_ones(ports: PmPorts) -> None:
    assert ports.inp(PM1A_CNT, 4) == 0xFFFF_0000 | SCI_EN
    ports.out(PM1A_CNT, 0xFFFF_0000 | SLP_EN, size=4)
    assert ports.sleeps == [0]
    assert ports.pm.mmio_read(0, 4) == 0xFFFF_FFFF


def test_state_round_trips(ports: PmPorts) -> None:
    ports.out(PM1A_EN, 0x0120)
    ports.out(PM1A_CNT, S5_SLP_TYP << 10)
    saved = snapshot(ports.pm)
    other = PmPorts()
    restore(other.pm, saved)
    assert other.inp(PM1A_EN) == 0x0120
    assert other.inp(PM1A_CNT) == SCI_EN | S5_SLP_TYP << 10
