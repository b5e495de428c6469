"""Local APIC: the xAPIC register page, the x2APIC MSRs, interrupt arbitration and the timer.

Written from the Intel SDM vol. 3 chapter 11 ("Advanced Programmable Interrupt Controller"),
with KVM's lapic as the reference where the SDM leaves room, because kvm-unit-tests (the
conformance measure for this device) was written against KVM.  One model serves both CPU
backends, so a guest sees the same APIC whether it runs on KVM or on the software CPU.

What the machine provides and consumes (the device itself never touches a backend):
- ``clock`` is GUEST time (``Clock.now_ns``; a replay feeds it from the trace).  It is read
  only while a guest access needs the time: a current-count read and timer (re)programming.
  The timer never fires on its own: the run loop asks ``next_deadline_ns()`` and calls
  ``advance(now_ns)``, exactly like the PIT, so every delivery happens at a recorded point.
- ``tsc_to_ns`` turns an IA32_TSC_DEADLINE value into guest nanoseconds (the machine owns
  the TSC frequency and offset).
- ``extint`` is the 8259 pair (``has_interrupt``/``acknowledge``): LINT0 in ExtINT mode, or
  a hardware-disabled APIC, passes its INTR straight to the CPU.
- ``eoi_broadcast(vector)`` is called on an EOI of a level-triggered vector (the I/O APIC
  clears its remote IRR), unless directed EOI (SVR bit 12) suppresses it.
- IPIs: every ICR write becomes an ``IpiRequest`` in ``state.outbox`` (``take_ipis``); the
  ones that target this APIC (self, all-including-self, or a matching destination) are
  also delivered here at once, so one CPU needs nothing more than to drain the outbox.
- ``take_nmi()``: an NMI requested through LINT1, an LVT in NMI mode, or an NMI IPI to self.
- The CPU asks ``has_interrupt()`` and, when it can take one, ``acknowledge()``.
- ``mmio_base()`` says where the register page is decoded now (None while disabled or in
  x2APIC mode): after an IA32_APIC_BASE write the machine compares and remaps.

Deviations, on purpose: the bus clock is 1 GHz (1 ns per timer tick before division, as KVM
and QEMU use); a periodic timer that missed several periods delivers one interrupt (like
the PIT); a divide-configuration change restarts the count from its current value at the
new rate (the sub-tick fraction is dropped); LVT delivery status always reads idle, since a
local interrupt is accepted into IRR at once.  Bad programming (reserved delivery modes,
unaligned or narrow writes, unknown offsets) is logged once per kind and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rrvmm.devices.bus import Clock

__all__ = [
    "APIC_BASE_MSR",
    "APIC_DEFAULT_BASE",
    "APIC_PAGE_SIZE",
    "IpiRequest",
    "LocalApic",
    "LapicState",
    "TSC_DEADLINE_MSR",
    "X2APIC_MSR_FIRST",
    "X2APIC_MSR_LAST",
]

log = logging.getLogger("rrvmm")

APIC_DEFAULT_BASE = 0xFEE00000
APIC_PAGE_SIZE = 0x1000
APIC_BASE_MSR = 0x1B
TSC_DEADLINE_MSR = 0x6E0
X2APIC_MSR_FIRST = 0x800
X2APIC_MSR_LAST = 0x8FF

# IA32_APIC_BASE bits.
BASE_BSP = 1 << 8
BASE_EXTD = 1 << 10
BASE_ENABLE = 1 << 11
BASE_ADDR_MASK = ~0xFFF

# Register offsets in the xAPIC page (the x2APIC MSR is 0x800 + offset >> 4).
REG_ID = 0x20
REG_VERSION = 0x30
REG_TPR = 0x80
REG_APR = 0x90
REG_PPR = 0xA0
REG_EOI = 0xB0
REG_RRD = 0xC0
REG_LDR = 0xD0
REG_DFR = 0xE0
REG_SVR = 0xF0
REG_ISR = 0x100
REG_TMR = 0x180
REG_IRR = 0x200
REG_ESR = 0x280
REG_ICR_LOW = 0x300
REG_ICR_HIGH = 0x310
REG_LVT_TIMER = 0x320
REG_LVT_ERROR = 0x370
REG_TIMER_INITIAL = 0x380
REG_TIMER_CURRENT = 0x390
REG_TIMER_DIVIDE = 0x3E0
REG_SELF_IPI = 0x3F0  # x2APIC only

APIC_VERSION = 0x14  # integrated APIC, as KVM and QEMU report
MAX_LVT = 5  # timer, thermal, perf, LINT0, LINT1, error (no CMCI)
VERSION_DIRECTED_EOI = 1 << 24

# LVT indices: register REG_LVT_TIMER + 0x10 * index.
LVT_TIMER = 0
LVT_THERMAL = 1
LVT_PERF = 2
LVT_LINT0 = 3
LVT_LINT1 = 4
LVT_ERROR = 5
LVT_COUNT = 6

LVT_MASKED = 1 << 16
LVT_LEVEL = 1 << 15
LVT_REMOTE_IRR = 1 << 14
LVT_POLARITY = 1 << 13
LVT_TIMER_MODE_SHIFT = 17
TIMER_ONESHOT = 0
TIMER_PERIODIC = 1
TIMER_TSC_DEADLINE = 2

# Bits a guest may write in each LVT (delivery status and remote IRR are read-only).
_LVT_WRITABLE = (
    0xFF | LVT_MASKED | (3 << LVT_TIMER_MODE_SHIFT),  # timer
    0x7FF | LVT_MASKED,  # thermal
    0x7FF | LVT_MASKED,  # perf
    0x7FF | LVT_POLARITY | LVT_LEVEL | LVT_MASKED,  # LINT0
    0x7FF | LVT_POLARITY | LVT_LEVEL | LVT_MASKED,  # LINT1
    0xFF | LVT_MASKED,  # error
)

# Delivery modes (LVT and ICR bits 10:8).
DM_FIXED = 0
DM_LOWEST = 1
DM_SMI = 2
DM_NMI = 4
DM_INIT = 5
DM_STARTUP = 6
DM_EXTINT = 7

SVR_ENABLE = 1 << 8
SVR_FOCUS_DISABLE = 1 << 9
SVR_SUPPRESS_EOI_BROADCAST = 1 << 12

# ESR bits.
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

# ICR fields.
ICR_VECTOR = 0xFF
ICR_LOGICAL = 1 << 11
ICR_BUSY = 1 << 12
ICR_LEVEL_ASSERT = 1 << 14
ICR_TRIGGER_LEVEL = 1 << 15
ICR_SHORTHAND_SHIFT = 18
ICR_LOW_WRITABLE = 0x000CCFFF
X2APIC_ICR_RESERVED = 0xFFF32000  # bits 31:20, 17:16 and 13 of the low half
SHORTHAND_NONE = 0
SHORTHAND_SELF = 1
SHORTHAND_ALL = 2
SHORTHAND_OTHERS = 3

_BUS_CYCLE_NS = 1


class ExtIntSource(Protocol):
    """The 8259 pair as the CPU's INTR source behind LINT0."""

    def has_interrupt(self) -> bool: ...
    def acknowledge(self) -> int: ...


@dataclass
class IpiRequest:
    """One ICR write, decoded: what the machine routes to other CPUs (or acts on: INIT, SIPI)."""

    vector: int
    delivery_mode: int
    logical: bool
    level_assert: bool
    trigger_level: bool
    shorthand: int
    dest: int
    source_id: int
    to_self: bool  # already delivered to this APIC (fixed, lowest priority, NMI)


@dataclass
class LapicState:
    apic_base: int = APIC_DEFAULT_BASE | BASE_ENABLE | BASE_BSP
    id: int = 0  # xAPIC: the 8-bit ID (register bits 31:24); x2APIC: the 32-bit ID
    tpr: int = 0
    ldr: int = 0  # xAPIC: register value as written (bits 31:24)
    dfr: int = 0xFFFFFFFF
    svr: int = 0xFF
    isr: list[int] = field(default_factory=lambda: [0] * 8)  # 8 x 32-bit words, as read
    tmr: list[int] = field(default_factory=lambda: [0] * 8)
    irr: list[int] = field(default_factory=lambda: [0] * 8)
    esr: int = 0  # what a read returns
    esr_pending: int = 0  # errors since the last ESR write
    icr_low: int = 0
    icr_high: int = 0
    lvt: list[int] = field(default_factory=lambda: [LVT_MASKED] * LVT_COUNT)
    timer_initial: int = 0
    timer_divide: int = 0  # divide configuration register bits 0,1,3
    timer_armed: bool = False
    timer_start_ns: int = 0  # when the current count was (virtually) loaded
    timer_next_ns: int = 0  # the next expiry while armed
    tsc_deadline: int = 0
    nmi_pending: bool = False
    extint_latched: bool = False  # an ExtINT message is waiting for the 8259's vector
    outbox: list[IpiRequest] = field(default_factory=list)


def _highest(words: list[int]) -> int:
    """The highest set bit of a 256-bit register, or -1."""
    for i in range(7, -1, -1):
        if words[i]:
            return i * 32 + words[i].bit_length() - 1
    return -1


def _set_bit(words: list[int], vector: int, on: bool) -> None:
    if on:
        words[vector >> 5] |= 1 << (vector & 31)
    else:
        words[vector >> 5] &= ~(1 << (vector & 31))


def _test_bit(words: list[int], vector: int) -> bool:
    return bool(words[vector >> 5] >> (vector & 31) & 1)


def _divisor(dcr: int) -> int:
    """Divide configuration (bits 0, 1, 3) to the divisor: 0b0000 -> 2 ... 0b1011 -> 1."""
    v = (dcr & 3) | ((dcr >> 1) & 4)
    return 1 << ((v + 1) & 7)


def _timer_mode(lvt_timer: int) -> int:
    return (lvt_timer >> LVT_TIMER_MODE_SHIFT) & 3


def _linear_tsc(tsc_hz: int) -> Callable[[int], int]:
    def to_ns(tsc: int) -> int:
        return -((-tsc * 1_000_000_000) // tsc_hz)

    return to_ns


class LocalApic:
    """One CPU's local APIC.  MMIO offsets are within the 4 KiB page; MSRs by number."""

    def __init__(
        self,
        clock: Clock,
        *,
        apic_id: int = 0,
        bsp: bool = True,
        extint: ExtIntSource | None = None,
        eoi_broadcast: Callable[[int], None] | None = None,
        tsc_to_ns: Callable[[int], int] | None = None,
        tsc_hz: int = 1_000_000_000,
        directed_eoi: bool = False,
        x2apic: bool = True,
        tsc_deadline: bool = True,
        maxphyaddr: int = 40,
    ) -> None:
        self._clock = clock
        self.initial_id = apic_id
        self._bsp = bsp
        self._extint = extint
        self._eoi_broadcast = eoi_broadcast or (lambda vector: None)
        self._tsc_to_ns = tsc_to_ns or _linear_tsc(tsc_hz)
        self.directed_eoi = directed_eoi
        self.x2apic_supported = x2apic
        self.tsc_deadline_supported = tsc_deadline
        self._phys_mask = (1 << maxphyaddr) - 1
        self._logged: set[str] = set()
        self.state = self._power_up()

    # -- reset and IA32_APIC_BASE ----------------------------------------------------------

    def _power_up(self) -> LapicState:
        """The state after RESET (SDM 11.4.7.1), with LINT0 in ExtINT and LINT1 in NMI mode.

        Firmware (SeaBIOS on QEMU) leaves the BSP's LINT0 as unmasked ExtINT and LINT1 as
        NMI before any kernel runs; rrvmm has no firmware, so the reset state carries that.
        """
        s = LapicState(id=self.initial_id & 0xFF)
        s.apic_base = APIC_DEFAULT_BASE | BASE_ENABLE | (BASE_BSP if self._bsp else 0)
        if self._bsp:
            s.lvt[LVT_LINT0] = DM_EXTINT << 8
            s.lvt[LVT_LINT1] = DM_NMI << 8
        return s

    def reset(self) -> None:
        self.state = self._power_up()

    @property
    def hw_enabled(self) -> bool:
        return bool(self.state.apic_base & BASE_ENABLE)

    @property
    def x2apic_mode(self) -> bool:
        return self.state.apic_base & (BASE_ENABLE | BASE_EXTD) == BASE_ENABLE | BASE_EXTD

    @property
    def sw_enabled(self) -> bool:
        return self.hw_enabled and bool(self.state.svr & SVR_ENABLE)

    def mmio_base(self) -> int | None:
        """Where the xAPIC page is decoded now; None while disabled or in x2APIC mode."""
        if not self.hw_enabled or self.x2apic_mode:
            return None
        return self.state.apic_base & BASE_ADDR_MASK & self._phys_mask

    def cpuid_apic(self) -> bool:
        """CPUID.1:EDX.APIC[bit 9] follows IA32_APIC_BASE.EN."""
        return self.hw_enabled

    def _write_apic_base(self, value: int) -> bool:
        """False (#GP) for reserved bits or an illegal mode transition (SDM 11.12.5)."""
        reserved = ~(self._phys_mask & BASE_ADDR_MASK | BASE_ENABLE | BASE_EXTD | BASE_BSP)
        if value & reserved:
            return False
        if not self.x2apic_supported and value & BASE_EXTD:
            return False
        old = self.state.apic_base
        old_mode = old & (BASE_ENABLE | BASE_EXTD)
        new_mode = value & (BASE_ENABLE | BASE_EXTD)
        if new_mode == BASE_EXTD:
            return False  # x2APIC without enable is invalid
        if old_mode == BASE_ENABLE | BASE_EXTD and new_mode == BASE_ENABLE:
            return False  # x2APIC -> xAPIC must go through disabled
        if old_mode == 0 and new_mode == BASE_ENABLE | BASE_EXTD:
            return False  # disabled -> x2APIC must go through xAPIC
        bsp = old & BASE_BSP  # read-only
        if old_mode and not new_mode:
            tpr = self.state.tpr  # CR8 keeps its value while the APIC is off
            self.state = self._power_up()
            self.state.tpr = tpr
        elif not old_mode and new_mode:
            self.state.id = self.initial_id & 0xFF
        if new_mode == BASE_ENABLE | BASE_EXTD and old_mode != new_mode:
            self.state.id = self.initial_id
            self.state.ldr = self._x2apic_ldr()
        self.state.apic_base = (value & ~BASE_BSP) | bsp
        new_base = self.mmio_base()
        if new_base is not None and new_base != APIC_DEFAULT_BASE:
            self._log_once("base", f"local APIC relocated to {new_base:#x}")
        return True

    def _x2apic_ldr(self) -> int:
        ident = self.initial_id
        return ((ident >> 4) << 16) | (1 << (ident & 0xF))

    # -- the CPU's side: interrupts, NMIs, CR8 ----------------------------------------------

    def _ppr(self) -> int:
        s = self.state
        isrv = max(_highest(s.isr), 0)
        if (s.tpr >> 4) >= (isrv >> 4):
            return s.tpr
        return isrv & 0xF0

    def _apr(self) -> int:
        s = self.state
        isrv = max(_highest(s.isr), 0)
        irrv = max(_highest(s.irr), 0)
        if (s.tpr >> 4) >= (irrv >> 4) and (s.tpr >> 4) >= (isrv >> 4):
            return s.tpr
        return max(isrv, irrv) & 0xF0

    def _fixed_pending(self) -> int:
        """The IRR vector the CPU would take now (above PPR), or -1."""
        if not self.sw_enabled:
            return -1
        irrv = _highest(self.state.irr)
        if irrv < 0 or (irrv & 0xF0) <= (self._ppr() & 0xF0):
            return -1
        return irrv

    def _extint_open(self) -> bool:
        """Whether the 8259's INTR reaches the CPU (virtual wire through LINT0, or no APIC)."""
        if self._extint is None:
            return False
        if not self.hw_enabled or self.state.extint_latched:
            return True
        lint0 = self.state.lvt[LVT_LINT0]
        return not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_EXTINT

    def has_interrupt(self) -> bool:
        """Whether INTR is asserted: an ExtINT from the 8259, or a fixed vector above PPR."""
        if self._extint_open() and self._extint is not None and self._extint.has_interrupt():
            return True
        return self._fixed_pending() >= 0

    def pending_vector(self) -> int | None:
        """The APIC vector ``acknowledge`` would return (None: the 8259's or none)."""
        if self._extint_open() and self._extint is not None and self._extint.has_interrupt():
            return None
        v = self._fixed_pending()
        return v if v >= 0 else None

    def acknowledge(self) -> int:
        """The INTA cycle.  ExtINT goes first (it ignores priority), then IRR -> ISR.

        With nothing left above PPR (TPR was raised since ``has_interrupt``), the APIC
        answers with the spurious vector and sets nothing in ISR (SDM 11.9).
        """
        s = self.state
        if self._extint_open() and self._extint is not None and self._extint.has_interrupt():
            s.extint_latched = False
            return self._extint.acknowledge()
        v = self._fixed_pending()
        if v < 0:
            return s.svr & 0xFF
        _set_bit(s.irr, v, False)
        _set_bit(s.isr, v, True)
        return v

    def take_nmi(self) -> bool:
        """Consume a pending NMI request."""
        pending = self.state.nmi_pending
        self.state.nmi_pending = False
        return pending

    def take_ipis(self) -> list[IpiRequest]:
        out = self.state.outbox
        self.state.outbox = []
        return out

    def cr8(self) -> int:
        return self.state.tpr >> 4

    def set_cr8(self, value: int) -> None:
        self.state.tpr = (value & 0xF) << 4

    # -- inputs: LINT pins, interrupt messages from the I/O APIC -----------------------------

    def set_lint1(self, level: bool) -> None:
        """LINT1 (the chipset's NMI line): a rising edge delivers through LVT LINT1."""
        if level and self.hw_enabled:
            self._local_deliver(LVT_LINT1)

    def matches(self, dest: int, logical: bool) -> bool:
        """Whether an interrupt message for ``dest`` (physical or logical) is for this APIC."""
        s = self.state
        if self.x2apic_mode:
            if dest == 0xFFFFFFFF:
                return True
            if not logical:
                return dest == s.id
            return dest >> 16 == s.ldr >> 16 and bool(dest & s.ldr & 0xFFFF)
        dest &= 0xFF
        if dest == 0xFF:
            return True
        if not logical:
            return dest == s.id
        ldr = s.ldr >> 24
        if s.dfr >> 28 == 0xF:  # flat model
            return bool(dest & ldr)
        return dest >> 4 == ldr >> 4 and bool(dest & ldr & 0xF)  # cluster model

    def deliver(self, vector: int, delivery_mode: int, trigger_level: bool = False) -> None:
        """An interrupt message on the APIC bus (from the I/O APIC, an MSI or an IPI)."""
        if not self.hw_enabled:
            return
        if delivery_mode in (DM_FIXED, DM_LOWEST):
            self._accept(vector, trigger_level)
        elif delivery_mode == DM_NMI:
            self.state.nmi_pending = True
        elif delivery_mode == DM_EXTINT:
            self.state.extint_latched = True
        else:
            self._log_once(f"dm{delivery_mode}", f"APIC message mode {delivery_mode} ignored")

    def _accept(self, vector: int, trigger_level: bool) -> None:
        s = self.state
        if not self.sw_enabled:
            return  # a software-disabled APIC drops fixed interrupts (as KVM)
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        _set_bit(s.irr, vector, True)
        _set_bit(s.tmr, vector, trigger_level)

    def _error(self, bits: int) -> None:
        s = self.state
        new = bits & ~s.esr_pending
        s.esr_pending |= bits
        if new:
            self._local_deliver(LVT_ERROR)

    def _local_deliver(self, index: int) -> None:
        lvt = self.state.lvt[index]
        if lvt & LVT_MASKED:
            return
        mode = DM_FIXED if index in (LVT_TIMER, LVT_ERROR) else (lvt >> 8) & 7
        if mode == DM_FIXED:
            level = index in (LVT_LINT0, LVT_LINT1) and bool(lvt & LVT_LEVEL)
            self._accept(lvt & 0xFF, level)
        elif mode == DM_NMI:
            self.state.nmi_pending = True
        elif mode == DM_EXTINT and index == LVT_LINT0:
            return  # the 8259 path is level-polled in has_interrupt
        else:
            self._log_once(f"lvt{index}", f"LVT {index} delivery mode {mode} ignored")

    # -- the timer -----------------------------------------------------------------------

    def _tick_ns(self) -> int:
        return _BUS_CYCLE_NS * _divisor(self.state.timer_divide)

    def next_deadline_ns(self) -> int | None:
        """When ``advance`` would next deliver a timer interrupt; None if never."""
        s = self.state
        return s.timer_next_ns if s.timer_armed else None

    def timer_due(self, now_ns: int) -> bool:
        s = self.state
        return s.timer_armed and now_ns >= s.timer_next_ns

    def advance(self, now_ns: int) -> None:
        """Deliver the timer interrupt if its expiry is at or before ``now_ns`` (guest time).

        A periodic timer that missed several periods delivers once and re-arms for the
        first period end after ``now_ns``.
        """
        s = self.state
        if not self.timer_due(now_ns):
            return
        mode = _timer_mode(s.lvt[LVT_TIMER])
        if mode == TIMER_PERIODIC and s.timer_initial:
            total = s.timer_initial * self._tick_ns()
            k = (now_ns - s.timer_start_ns) // total
            s.timer_next_ns = s.timer_start_ns + (k + 1) * total
        else:
            s.timer_armed = False
            if mode == TIMER_TSC_DEADLINE:
                s.tsc_deadline = 0
        self._local_deliver(LVT_TIMER)

    def _current_count(self, now_ns: int) -> int:
        s = self.state
        mode = _timer_mode(s.lvt[LVT_TIMER])
        if not s.timer_armed or mode == TIMER_TSC_DEADLINE or not s.timer_initial:
            return 0
        elapsed = max(now_ns - s.timer_start_ns, 0)
        ticks = elapsed // self._tick_ns()
        if mode == TIMER_PERIODIC:
            return s.timer_initial - ticks % s.timer_initial
        return max(s.timer_initial - ticks, 0)

    def _catch_up(self) -> int:
        now = self._clock.now_ns()
        self.advance(now)
        return now

    def _write_initial_count(self, value: int) -> None:
        s = self.state
        if _timer_mode(s.lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE:
            return  # ignored in TSC-deadline mode
        now = self._catch_up()
        s.timer_initial = value
        s.timer_armed = value != 0
        s.timer_start_ns = now
        s.timer_next_ns = now + value * self._tick_ns()

    def _write_divide(self, value: int) -> None:
        s = self.state
        now = self._catch_up()
        current = self._current_count(now)
        s.timer_divide = value & 0xB
        if s.timer_armed and _timer_mode(s.lvt[LVT_TIMER]) != TIMER_TSC_DEADLINE:
            tick = self._tick_ns()
            s.timer_start_ns = now - (s.timer_initial - current) * tick
            s.timer_next_ns = now + current * tick

    def _write_lvt_timer(self, value: int) -> None:
        s = self.state
        now = self._catch_up()
        old_mode = _timer_mode(s.lvt[LVT_TIMER])
        new_mode = _timer_mode(value)
        if new_mode == 3 or (new_mode == TIMER_TSC_DEADLINE and not self.tsc_deadline_supported):
            self._log_once("timer-mode", f"LVT timer mode {new_mode} is reserved; kept one-shot")
            value &= ~(3 << LVT_TIMER_MODE_SHIFT)
            new_mode = TIMER_ONESHOT
        if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE):
            s.timer_armed = False
            s.timer_initial = 0
            s.tsc_deadline = 0
        elif old_mode == TIMER_PERIODIC and new_mode == TIMER_ONESHOT and s.timer_armed:
            total = s.timer_initial * self._tick_ns()
            s.timer_start_ns += (now - s.timer_start_ns) // total * total
            s.timer_next_ns = s.timer_start_ns + total
        s.lvt[LVT_TIMER] = value

    def _write_tsc_deadline(self, value: int) -> None:
        s = self.state
        if not self.hw_enabled or _timer_mode(s.lvt[LVT_TIMER]) != TIMER_TSC_DEADLINE:
            return  # KVM: ignored unless the timer is in TSC-deadline mode
        now = self._catch_up()
        s.tsc_deadline = value
        s.timer_armed = value != 0
        s.timer_next_ns = self._tsc_to_ns(value) if value else 0
        self.advance(now)  # a deadline already past fires at once

    # -- registers (shared by MMIO and MSRs) -----------------------------------------------

    def _read_reg(self, offset: int) -> int | None:
        """The 32-bit register at ``offset`` (16-byte aligned); None if there is none."""
        s = self.state
        x2 = self.x2apic_mode
        if offset == REG_ID:
            return s.id if x2 else s.id << 24
        if offset == REG_VERSION:
            eoi = VERSION_DIRECTED_EOI if self.directed_eoi else 0
            return APIC_VERSION | (MAX_LVT << 16) | eoi
        if offset == REG_TPR:
            return s.tpr
        if offset == REG_APR:
            return self._apr()
        if offset == REG_PPR:
            return self._ppr()
        if offset == REG_EOI:
            return 0
        if offset == REG_LDR:
            return s.ldr
        if offset == REG_DFR and not x2:
            return s.dfr
        if offset == REG_SVR:
            return s.svr
        if REG_ISR <= offset < REG_ISR + 0x80:
            return s.isr[(offset - REG_ISR) >> 4]
        if REG_TMR <= offset < REG_TMR + 0x80:
            return s.tmr[(offset - REG_TMR) >> 4]
        if REG_IRR <= offset < REG_IRR + 0x80:
            return s.irr[(offset - REG_IRR) >> 4]
        if offset == REG_ESR:
            return s.esr
        if offset == REG_ICR_LOW:
            return s.icr_low
        if offset == REG_ICR_HIGH and not x2:
            return s.icr_high
        if REG_LVT_TIMER <= offset <= REG_LVT_ERROR:
            return s.lvt[(offset - REG_LVT_TIMER) >> 4]
        if offset == REG_TIMER_INITIAL:
            return s.timer_initial
        if offset == REG_TIMER_CURRENT:
            return self._current_count(self._clock.now_ns())
        if offset == REG_TIMER_DIVIDE:
            return s.timer_divide
        return None

    def _write_reg(self, offset: int, value: int) -> bool:
        """Write a 32-bit register; False if ``offset`` is not a writable register."""
        s = self.state
        x2 = self.x2apic_mode
        value &= 0xFFFFFFFF
        if offset == REG_ID and not x2:
            s.id = value >> 24
        elif offset == REG_TPR:
            s.tpr = value & 0xFF
        elif offset == REG_EOI:
            self._eoi()
        elif offset == REG_LDR and not x2:
            s.ldr = value & 0xFF000000
        elif offset == REG_DFR and not x2:
            s.dfr = value | 0x0FFFFFFF
        elif offset == REG_SVR:
            self._write_svr(value)
        elif offset == REG_ESR:
            s.esr = s.esr_pending
            s.esr_pending = 0
        elif offset == REG_ICR_LOW:
            s.icr_low = value & ICR_LOW_WRITABLE
            self._send_ipi(s.icr_low, s.icr_high >> 24)
        elif offset == REG_ICR_HIGH and not x2:
            s.icr_high = value & 0xFF000000
        elif offset == REG_LVT_TIMER:
            self._write_lvt(LVT_TIMER, value)
        elif REG_LVT_TIMER < offset <= REG_LVT_ERROR:
            self._write_lvt((offset - REG_LVT_TIMER) >> 4, value)
        elif offset == REG_TIMER_INITIAL:
            self._write_initial_count(value)
        elif offset == REG_TIMER_DIVIDE:
            self._write_divide(value)
        elif offset == REG_SELF_IPI and x2:
            self._accept_ipi_to_self(value & 0xFF)
        else:
            return False
        return True

    def _write_svr(self, value: int) -> None:
        s = self.state
        writable = 0x3FF | (SVR_SUPPRESS_EOI_BROADCAST if self.directed_eoi else 0)
        s.svr = value & writable
        if not s.svr & SVR_ENABLE:
            s.lvt = [v | LVT_MASKED for v in s.lvt]  # SDM 11.4.7.2: software disable masks all

    def _write_lvt(self, index: int, value: int) -> None:
        s = self.state
        if not s.svr & SVR_ENABLE:
            value |= LVT_MASKED  # cannot be unmasked while software-disabled
        keep = s.lvt[index] & ~_LVT_WRITABLE[index]
        value = (value & _LVT_WRITABLE[index]) | keep
        if index not in (LVT_TIMER, LVT_ERROR):
            mode = (value >> 8) & 7
            bad = mode in (DM_LOWEST, 3, DM_STARTUP) or (mode == DM_EXTINT and index != LVT_LINT0)
            if bad:
                self._log_once(f"lvt-mode{index}", f"LVT {index} reserved delivery mode {mode}")
        if index == LVT_TIMER:
            self._write_lvt_timer(value)
        else:
            s.lvt[index] = value

    def _eoi(self) -> None:
        s = self.state
        v = _highest(s.isr)
        if v < 0:
            return
        _set_bit(s.isr, v, False)
        suppressed = self.directed_eoi and s.svr & SVR_SUPPRESS_EOI_BROADCAST
        if _test_bit(s.tmr, v) and not suppressed:
            self._eoi_broadcast(v)

    def _accept_ipi_to_self(self, vector: int) -> None:
        if vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        self._accept(vector, False)

    def _send_ipi(self, low: int, dest: int) -> None:
        if not self.x2apic_mode:
            dest &= 0xFF
        mode = (low >> 8) & 7
        vector = low & ICR_VECTOR
        shorthand = (low >> ICR_SHORTHAND_SHIFT) & 3
        logical = bool(low & ICR_LOGICAL)
        if shorthand == SHORTHAND_SELF:
            to_self = True
        elif shorthand == SHORTHAND_ALL:
            to_self = True
        elif shorthand == SHORTHAND_OTHERS:
            to_self = False
        else:
            to_self = self.matches(dest, logical)
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            to_self = False
        elif mode in (DM_SMI, DM_INIT, DM_STARTUP, DM_EXTINT, 3):
            to_self = False  # left to the machine (INIT/SIPI) or meaningless here
        elif to_self:
            self.deliver(vector, mode, bool(low & ICR_TRIGGER_LEVEL))
        self.state.outbox.append(
            IpiRequest(
                vector=vector,
                delivery_mode=mode,
                logical=logical,
                level_assert=bool(low & ICR_LEVEL_ASSERT),
                trigger_level=bool(low & ICR_TRIGGER_LEVEL),
                shorthand=shorthand,
                dest=dest,
                source_id=self.state.id,
                to_self=to_self,
            )
        )

    # -- xAPIC MMIO ----------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        """A load from the APIC page: bytes 0-3 of each 16-byte register are readable."""
        if self.mmio_base() is None:
            return (1 << (8 * size)) - 1  # not decoded: a floating bus
        align = offset & 0xF
        if size not in (1, 2, 4) or align + size > 4:
            self._log_once("mmio-size", f"APIC MMIO read of {size} at {offset:#x} reads 0")
            return 0
        value = self._read_reg(offset & 0xFF0)
        if value is None:
            self._log_once(f"r{offset & 0xFF0:#x}", f"APIC read of reserved {offset:#x}")
            return 0
        return (value >> (8 * align)) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """A store to the APIC page: only aligned 32-bit stores reach a register (as KVM)."""
        if self.mmio_base() is None:
            return
        if size != 4 or offset & 0xF:
            self._log_once("mmio-wsize", f"APIC MMIO write of {size} at {offset:#x} ignored")
            return
        if offset == REG_SELF_IPI or not self._write_reg(offset, value):
            self._log_once(f"w{offset:#x}", f"APIC write to read-only/reserved {offset:#x}")

    def pio_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def pio_write(self, offset: int, size: int, value: int) -> None:
        return None

    # -- MSRs ------------------------------------------------------------------------------

    def handles_msr(self, index: int) -> bool:
        return index in (APIC_BASE_MSR, TSC_DEADLINE_MSR) or (
            X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST
        )

    def msr_read(self, index: int) -> int | None:
        """RDMSR; None means #GP."""
        s = self.state
        if index == APIC_BASE_MSR:
            return s.apic_base
        if index == TSC_DEADLINE_MSR:
            if not self.tsc_deadline_supported:
                return None
            return s.tsc_deadline
        if not X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST or not self.x2apic_mode:
            return None
        offset = (index - X2APIC_MSR_FIRST) << 4
        if offset in (REG_EOI, REG_SELF_IPI, REG_APR, REG_RRD):
            return None  # write-only, or absent in x2APIC mode
        if offset == REG_ICR_LOW:
            return s.icr_low | (s.icr_high << 32)
        return self._read_reg(offset)

    def msr_write(self, index: int, value: int) -> bool:
        """WRMSR; False means #GP (x2APIC rules, SDM 11.12.1.2)."""
        s = self.state
        value &= 0xFFFFFFFFFFFFFFFF
        if index == APIC_BASE_MSR:
            return self._write_apic_base(value)
        if index == TSC_DEADLINE_MSR:
            if not self.tsc_deadline_supported:
                return False
            self._write_tsc_deadline(value)
            return True
        if not X2APIC_MSR_FIRST <= index <= X2APIC_MSR_LAST or not self.x2apic_mode:
            return False
        offset = (index - X2APIC_MSR_FIRST) << 4
        if offset == REG_ICR_LOW:
            if value & X2APIC_ICR_RESERVED:
                return False
            s.icr_high = value >> 32
            s.icr_low = value & ICR_LOW_WRITABLE
            self._send_ipi(s.icr_low, s.icr_high)
            return True
        if value >> 32:
            return False
        if offset in (REG_EOI, REG_ESR) and value:
            return False
        if offset == REG_SELF_IPI and value & ~0xFF:
            return False
        if offset in (REG_ID, REG_LDR, REG_ICR_HIGH, REG_DFR):
            return False  # read-only or absent in x2APIC mode
        if offset == REG_TPR and value & ~0xFF:
            return False
        return self._write_reg(offset, value)

    # -- logging ---------------------------------------------------------------------------

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)
