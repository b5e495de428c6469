"""ACPI PM1a event and control registers: the fixed hardware behind the FADT's PM1 blocks.

The guest needs them for one thing that matters to us, powering off: Linux writes SLP_TYP then
SLP_TYP|SLP_EN to PM1_CNT, and ``on_sleep(SLP_TYP)`` tells the machine (``S5_SLP_TYP`` is what
our DSDT's ``\\_S5`` names, so it means power off). Everything else only has to look like
working hardware to ACPICA: SCI_EN always reads 1 (we have no SMI_CMD, so ACPI mode is
permanent), PM1_EN keeps what is written (ACPICA probes the global lock by whether GBL_EN
sticks), and no status bit is ever raised, so the SCI never fires and nothing here is a
nondeterministic input to record.

Layout from offset 0 (ACPI 6.x, 4.8.3): PM1_STS (u16, write 1 to clear), PM1_EN (u16),
PM1_CNT (u16). The registers are byte-addressable like any ISA port block, so a word access
is two byte accesses and a dword at offset 0 covers STS and EN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rrvmm.devices.isa import ByteRegisters

__all__ = ["AcpiPm", "AcpiPmState", "S5_SLP_TYP", "PM1_STS", "PM1_EN", "PM1_CNT"]

S5_SLP_TYP = 5  # the SLP_TYP value \_S5 gives the guest; a write of it with SLP_EN = power off

# Register offsets in the 6-byte block.
PM1_STS = 0
PM1_EN = 2
PM1_CNT = 4
PM_BLOCK_LEN = 6

# PM1_CNT bits.
SCI_EN = 1 << 0
BM_RLD = 1 << 1
GBL_RLS = 1 << 2  # write-only: would ask firmware to release the global lock
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13  # write-only
PM1_CNT_STORED = BM_RLD | SLP_TYP_MASK


@dataclass
class AcpiPmState:
    """The three 16-bit registers (PM1_CNT without its read-as-fixed and write-only bits)."""

    pm1_sts: int = 0
    pm1_en: int = 0
    pm1_cnt: int = 0


class AcpiPm(ByteRegisters):
    """PM1a_EVT at offsets 0-3 and PM1a_CNT at 4-5; map it at the FADT's PM1a_EVT_BLK."""

    windows = ((0, PM_BLOCK_LEN),)

    def __init__(self, on_sleep: Callable[[int], None]) -> None:
        self._on_sleep = on_sleep
        self.state = AcpiPmState()

    def _reg(self, offset: int) -> int:
        s = self.state
        if offset < PM1_EN:
            return s.pm1_sts
        if offset < PM1_CNT:
            return s.pm1_en
        return s.pm1_cnt | SCI_EN

    def read8(self, offset: int) -> int:
        return (self._reg(offset) >> (8 * (offset & 1))) & 0xFF

    def write8(self, offset: int, value: int) -> None:
        shift = 8 * (offset & 1)
        lane = 0xFF << shift
        bits = (value & 0xFF) << shift
        s = self.state
        if offset < PM1_EN:
            s.pm1_sts &= ~bits & 0xFFFF
        elif offset < PM1_CNT:
            s.pm1_en = (s.pm1_en & ~lane) | bits
        else:
            s.pm1_cnt = (s.pm1_cnt & ~(lane & PM1_CNT_STORED)) | (bits & PM1_CNT_STORED)
            if bits & SLP_EN:
                self._on_sleep((s.pm1_cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT)
