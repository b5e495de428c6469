"""MC146818 CMOS RTC and its 128 bytes of CMOS RAM (index port 0x70, data port 0x71).

The time of day is a nondeterministic input: ``wall_clock()`` is called only when the guest
accesses a time register (0x00, 0x02, 0x04, 0x06-0x09, 0x32) or sets/clears register B's SET
bit, so a record/replay seam around it sees every value the guest could observe.  The guest
may set the clock: the difference to the host's wall clock is kept in whole seconds in the
state.  While SET is on, the time registers hold what the guest wrote (as on the chip, where
SET stops updates) and the new offset is taken when SET is cleared.

Deliberate simplifications:
- Register A's UIP bit always reads 0: there is no update cycle to be inside of, and a value
  that depended on the sub-second phase of the host clock would be one more input to log.
  Linux only polls UIP to wait it out.
- No periodic, alarm or update-ended interrupts are generated (IRQ 8 is not wired); the
  register C flags are therefore never set by the model, but reading C clears them as on the
  chip.  Register D always reports VRT (valid RAM and time).
- Time fields are kept as numbers and encoded on every read according to register B's DM
  (binary/BCD) and 24/12-hour bits, so changing B's format takes effect at once.  Dates are
  proleptic Gregorian in UTC; the century is register 0x32 (the PC/ACPI convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rrvmm.devices.isa import ByteRegisters

__all__ = ["CmosRtc", "RtcState", "CMOS_SIZE"]

CMOS_SIZE = 128

# Register indices (linux/mc146818rtc.h).
RTC_SECONDS = 0x00
RTC_SECONDS_ALARM = 0x01
RTC_MINUTES = 0x02
RTC_MINUTES_ALARM = 0x03
RTC_HOURS = 0x04
RTC_HOURS_ALARM = 0x05
RTC_DAY_OF_WEEK = 0x06
RTC_DAY_OF_MONTH = 0x07
RTC_MONTH = 0x08
RTC_YEAR = 0x09
RTC_REG_A = 0x0A
RTC_REG_B = 0x0B
RTC_REG_C = 0x0C
RTC_REG_D = 0x0D
RTC_CENTURY = 0x32
RTC_FREQ_SELECT = RTC_REG_A
RTC_CONTROL = RTC_REG_B
RTC_INTR_FLAGS = RTC_REG_C
RTC_VALID = RTC_REG_D

RTC_UIP = 0x80  # register A
RTC_REF_CLCK_32KHZ = 0x20
RTC_RATE_1024HZ = 0x06
RTC_SET = 0x80  # register B
RTC_PIE = 0x40
RTC_AIE = 0x20
RTC_UIE = 0x10
RTC_SQWE = 0x08
RTC_DM_BINARY = 0x04
RTC_24H = 0x02
RTC_DST_EN = 0x01
RTC_IRQF = 0x80  # register C
RTC_PF = 0x40
RTC_AF = 0x20
RTC_UF = 0x10
RTC_VRT = 0x80  # register D
RTC_HOUR_PM = 0x80  # hours register, 12-hour mode

CMOS_NMI_DISABLE = 0x80  # index port bit 7

# PC CMOS memory-size bytes (little-endian pairs).
CMOS_BASE_MEM_LO = 0x15  # KiB below 1 MiB
CMOS_BASE_MEM_HI = 0x16
CMOS_EXT_MEM_LO = 0x17  # KiB above 1 MiB, capped at 0xffff
CMOS_EXT_MEM_HI = 0x18
CMOS_EXT_MEM2_LO = 0x30  # the same, as the BIOS reports it after POST
CMOS_EXT_MEM2_HI = 0x31
CMOS_HIGH_MEM_LO = 0x34  # 64 KiB units above 16 MiB, capped at 0xffff
CMOS_HIGH_MEM_HI = 0x35

# Field positions in a time tuple.
_SEC, _MIN, _HOUR, _WDAY, _MDAY, _MON, _YEAR = range(7)
_TIME_REGS = {
    RTC_SECONDS: _SEC,
    RTC_MINUTES: _MIN,
    RTC_HOURS: _HOUR,
    RTC_DAY_OF_WEEK: _WDAY,
    RTC_DAY_OF_MONTH: _MDAY,
    RTC_MONTH: _MON,
    RTC_YEAR: _YEAR,
    RTC_CENTURY: _YEAR,
}


@dataclass
class RtcState:
    index: int = 0
    nmi_disabled: bool = False
    cmos: list[int] = field(default_factory=lambda: [0] * CMOS_SIZE)
    offset_s: int = 0  # guest time minus host wall time, in seconds
    held: list[int] = field(default_factory=list)  # time fields frozen while SET is on


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian; month normalized, day may overflow)."""
    y += (m - 1) // 12
    m = (m - 1) % 12 + 1
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def fields_from_epoch(t: int) -> list[int]:
    """[sec, min, hour, weekday (1 = Sunday), day, month, year] for epoch seconds ``t``."""
    days, rem = divmod(t, 86400)
    year, month, day = _civil_from_days(days)
    weekday = (days + 4) % 7 + 1  # 1970-01-01 was a Thursday
    return [rem % 60, rem // 60 % 60, rem // 3600, weekday, day, month, year]


def epoch_from_fields(f: list[int]) -> int:
    days = _days_from_civil(f[_YEAR], f[_MON], f[_MDAY])
    return days * 86400 + f[_HOUR] * 3600 + f[_MIN] * 60 + f[_SEC]


def _to_bcd(v: int) -> int:
    return ((v // 10 % 10) << 4) | (v % 10)


def _from_bcd(v: int) -> int:
    return (v >> 4) * 10 + (v & 0x0F)


class CmosRtc(ByteRegisters):
    """The RTC/CMOS at offsets 0 (index, bit 7 = NMI disable) and 1 (data)."""

    windows = ((0, 2),)

    def __init__(self, wall_clock: Callable[[], float], memory_bytes: int) -> None:
        self._wall_clock = wall_clock
        self._memory_bytes = memory_bytes
        self.state = RtcState()
        self._init_cmos()

    def reset(self) -> None:
        """Battery-backed: a reset keeps the guest's clock offset and CMOS contents."""
        self.state.index = 0
        self.state.nmi_disabled = False

    def _init_cmos(self) -> None:
        cmos = self.state.cmos
        cmos[RTC_REG_A] = RTC_REF_CLCK_32KHZ | RTC_RATE_1024HZ
        cmos[RTC_REG_B] = RTC_24H
        cmos[RTC_REG_D] = RTC_VRT
        kib = 1024
        mem = self._memory_bytes
        base = min(mem // kib, 640)
        ext = min(max(mem - 1024 * kib, 0) // kib, 0xFFFF)
        high = min(max(mem - 16 * 1024 * kib, 0) // (64 * kib), 0xFFFF)
        for lo, value in (
            (CMOS_BASE_MEM_LO, base),
            (CMOS_EXT_MEM_LO, ext),
            (CMOS_EXT_MEM2_LO, ext),
            (CMOS_HIGH_MEM_LO, high),
        ):
            cmos[lo] = value & 0xFF
            cmos[lo + 1] = value >> 8

    @property
    def nmi_disabled(self) -> bool:
        """Port 0x70 bit 7 as last written: the run loop must not inject NMIs while set."""
        return self.state.nmi_disabled

    # -- time ------------------------------------------------------------------------------

    def _wall_seconds(self) -> int:
        return math.floor(self._wall_clock())

    def _fields(self) -> list[int]:
        if self.state.held:
            return list(self.state.held)
        return fields_from_epoch(self._wall_seconds() + self.state.offset_s)

    def _encode(self, v: int) -> int:
        return v if self.state.cmos[RTC_REG_B] & RTC_DM_BINARY else _to_bcd(v)

    def _decode(self, v: int) -> int:
        return v if self.state.cmos[RTC_REG_B] & RTC_DM_BINARY else _from_bcd(v)

    def _read_time(self, reg: int) -> int:
        f = self._fields()
        if reg == RTC_HOURS and not self.state.cmos[RTC_REG_B] & RTC_24H:
            hour = f[_HOUR]
            return self._encode(hour % 12 or 12) | (RTC_HOUR_PM if hour >= 12 else 0)
        if reg == RTC_YEAR:
            return self._encode(f[_YEAR] % 100)
        if reg == RTC_CENTURY:
            return self._encode(f[_YEAR] // 100 % 100)
        return self._encode(f[_TIME_REGS[reg]])

    def _write_time(self, reg: int, value: int) -> None:
        s = self.state
        wall = None if s.held else self._wall_seconds()
        f = list(s.held) if s.held else fields_from_epoch(wall + s.offset_s)
        if reg == RTC_HOURS and not s.cmos[RTC_REG_B] & RTC_24H:
            hour = self._decode(value & ~RTC_HOUR_PM) % 12
            f[_HOUR] = hour + (12 if value & RTC_HOUR_PM else 0)
        elif reg == RTC_YEAR:
            f[_YEAR] = f[_YEAR] // 100 * 100 + self._decode(value) % 100
        elif reg == RTC_CENTURY:
            f[_YEAR] = self._decode(value) * 100 + f[_YEAR] % 100
        else:
            f[_TIME_REGS[reg]] = self._decode(value)
        if wall is None:
            s.held = f  # SET is on: hold exactly what was written
        elif reg != RTC_DAY_OF_WEEK:  # outside SET, the weekday follows the date
            s.offset_s = epoch_from_fields(f) - wall

    def _write_reg_b(self, value: int) -> None:
        s = self.state
        was_set = bool(s.cmos[RTC_REG_B] & RTC_SET)
        if value & RTC_SET and not was_set:
            s.held = fields_from_epoch(self._wall_seconds() + s.offset_s)
        elif not value & RTC_SET and was_set:
            s.offset_s = epoch_from_fields(s.held) - self._wall_seconds()
            s.held = []
        s.cmos[RTC_REG_B] = value

    # -- ports -----------------------------------------------------------------------------

    def read8(self, offset: int) -> int:
        if offset == 0:
            return 0xFF  # the index port is write-only
        s = self.state
        reg = s.index
        if reg in _TIME_REGS:
            return self._read_time(reg)
        if reg == RTC_REG_A:
            return s.cmos[reg] & ~RTC_UIP
        if reg == RTC_REG_C:
            value = s.cmos[reg]
            s.cmos[reg] = 0
            return value
        if reg == RTC_REG_D:
            return RTC_VRT
        return s.cmos[reg]

    def write8(self, offset: int, value: int) -> None:
        s = self.state
        if offset == 0:
            s.index = value & 0x7F
            s.nmi_disabled = bool(value & CMOS_NMI_DISABLE)
            return
        reg = s.index
        if reg in _TIME_REGS:
            self._write_time(reg, value)
        elif reg == RTC_REG_A:
            s.cmos[reg] = value & ~RTC_UIP
        elif reg == RTC_REG_B:
            self._write_reg_b(value)
        elif reg in (RTC_REG_C, RTC_REG_D):
            pass  # read-only
        else:
            s.cmos[reg] = value
