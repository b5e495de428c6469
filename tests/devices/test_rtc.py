"""CMOS RTC: time formats, setting the clock, NMI bit, CMOS memory sizes, register C/D."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from rrvmm.devices.rtc import CmosRtc, epoch_from_fields, fields_from_epoch

if TYPE_CHECKING:
    from conftest import Ports

INDEX, DATA = 0x70, 0x71
T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC, a Tuesday
MiB = 1 << 20


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.t


class Cmos:
    def __init__(self, ports: Ports, memory: int = 128 * MiB) -> None:
        self.wall = Wall(T0 + 0.25)
        self.rtc = CmosRtc(self.wall, memory)
        ports.bus.insert(self.rtc, 0x70, 2)
        self.p = ports

    def read(self, reg: int) -> int:
        self.p.outb(INDEX, reg)
        return self.p.inb(DATA)

    def write(self, reg: int, value: int) -> None:
        self.p.outb(INDEX, reg)
        self.p.outb(DATA, value)

    def clock(self) -> tuple[int, ...]:
        """(sec, min, hour, wday, mday, mon, year, century) as raw register values."""
        return tuple(self.read(r) for r in (0, 2, 4, 6, 7, 8, 9, 0x32))


@pytest.fixture
def cmos(ports: Ports) -> Cmos:
    return Cmos(ports)


def test_default_bcd_24h(cmos: Cmos) -> None:
    assert cmos.read(0x0B) == 0x02
    assert cmos.clock() == (0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20)


def test_binary_mode(cmos: Cmos) -> None:
    cmos.write(0x0B, 0x06)
    assert cmos.clock() == (20, 13, 22, 3, 14, 11, 23, 20)


@pytest.mark.parametrize(
    ("hour", "bcd", "binary"),
    [
        (0, 0x12, 12),  # midnight is 12 AM
        (1, 0x01, 1),
        (11, 0x11, 11),
        (12, 0x92, 0x80 | 12),  # noon is 12 PM
        (13, 0x81, 0x81),
        (22, 0x90, 0x80 | 10),
        (23, 0x91, 0x80 | 11),
    ],
)
def test_12_hour_mode(cmos: Cmos, hour: int, bcd: int, binary: int) -> None:
    cmos.wall.t = T0 + (hour - 22) * 3600
    cmos.write(0x0B, 0x00)
    assert cmos.read(0x04) == bcd
    cmos.write(0x0B, 0x04)
    assert cmos.read(0x04) == binary
    cmos.write(0x04, binary)  # writing back the same 12-hour value keeps the time
    cmos.write(0x0B, 0x06)
    assert cmos.read(0x04) == hour


def test_nmi_disable_bit(cmos: Cmos) -> None:
    cmos.p.outb(INDEX, 0x80 | 0x0B)
    assert cmos.rtc.nmi_disabled
    assert cmos.p.inb(DATA) == 0x02  # the index is the low seven bits
    cmos.p.outb(INDEX, 0x0D)
    assert not cmos.rtc.nmi_disabled
    assert cmos.p.inb(INDEX) == 0xFF


@pytest.mark.parametrize(
    ("memory", "base", "ext", "high"),
    [
        (128 * MiB, 640, 0xFFFF, (128 - 16) * 16),
        (8 * MiB, 640, 7 * 1024, 0),
        (512 * 1024, 512, 0, 0),
        (8 << 30, 640, 0xFFFF, 0xFFFF),
    ],
)
def test_memory_size_bytes(ports: Ports, memory: int, base: int, ext: int, high: int) -> None:
    c = Cmos(ports, memory)

    def word(lo: int) -> int:
        return c.read(lo) | (c.read(lo + 1) << 8)

    assert word(0x15) == base
    assert word(0x17) == ext
    assert word(0x30) == ext
    assert word(0x34) == high


def test_status_registers(cmos: Cmos) -> None:
    assert cmos.read(0x0A) == 0x26
    cmos.write(0x0A, 0xA6)
    assert cmos.read(0x0A) == 0x26  # UIP is read-only and always 0
    assert cmos.read(0x0D) == 0x80  # VRT; bit 6 clear, as Linux requires
    cmos.write(0x0D, 0x00)
    assert cmos.read(0x0D) == 0x80


def test_register_c_clears_on_read(cmos: Cmos) -> None:
    assert cmos.read(0x0C) == 0
    cmos.rtc.state.cmos[0x0C] = 0xF0  # no interrupt source sets flags; plant some
    assert cmos.read(0x0C) == 0xF0
    assert cmos.read(0x0C) == 0
    cmos.write(0x0C, 0xFF)
    assert cmos.read(0x0C) == 0


def test_cmos_ram_and_alarm_registers(cmos: Cmos) -> None:
    for reg, value in ((0x01, 0x59), (0x03, 0x30), (0x05, 0x12), (0x40, 0xAB), (0x7F, 0x01)):
        cmos.write(reg, value)
        assert cmos.read(reg) == value
    assert cmos.wall.calls == 0  # none of those touch the wall clock


def test_set_time_with_set_bit(cmos: Cmos) -> None:
    """The order of Linux's mc146818_set_time()."""
    cmos.write(0x0B, 0x82)  # SET: updates stop
    cmos.write(0x0A, 0x70)  # divider reset, as Linux does
    for reg, value in ((0x00, 0x58), (0x02, 0x59), (0x04, 0x23), (0x07, 0x31)):
        cmos.write(reg, value)
    cmos.write(0x08, 0x12)
    cmos.write(0x09, 0x99)
    cmos.write(0x32, 0x19)
    cmos.wall.t += 100  # held while SET is on
    assert cmos.clock()[:3] == (0x58, 0x59, 0x23)
    cmos.write(0x0B, 0x02)
    cmos.write(0x0A, 0x26)
    assert cmos.clock() == (0x58, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19)  # a Friday
    cmos.wall.t += 3
    assert cmos.clock() == (0x01, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20)  # Y2K


def test_set_single_field_without_set_bit(cmos: Cmos) -> None:
    cmos.write(0x02, 0x45)
    assert cmos.clock()[:3] == (0x20, 0x45, 0x22)
    cmos.wall.t += 60
    assert cmos.clock()[:3] == (0x20, 0x46, 0x22)
    assert cmos.rtc.state.offset_s == (45 - 13) * 60


def test_wall_clock_read_only_for_time_registers(cmos: Cmos) -> None:
    for reg in (0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x15, 0x30):
        cmos.read(reg)
    assert cmos.wall.calls == 0
    cmos.read(0x00)
    assert cmos.wall.calls == 1


@pytest.mark.parametrize("t", [0, 951782400, 951868800, T0, 4102444800, 2**33, -86400])
def test_calendar_matches_gmtime(t: int) -> None:
    f = fields_from_epoch(t)
    tm = time.gmtime(t)
    assert f == [
        tm.tm_sec,
        tm.tm_min,
        tm.tm_hour,
        (tm.tm_wday + 1) % 7 + 1,
        tm.tm_mday,
        tm.tm_mon,
        tm.tm_year,
    ]
    assert epoch_from_fields(f) == t
