"""Guest time on the software CPU: one clock, a pure function of the instruction count.

The software backend counts instructions exactly, so guest time is defined by them: every
completed instruction is ``NS_PER_INSTRUCTION`` nanoseconds of guest time (a 1 GHz CPU that
retires one instruction per cycle), and while the guest halts, guest time moves on to the
next device deadline (or by host time, when waiting for input). Nothing else advances it:
a VM exit costs no guest time, so the count of exits (which a faster run loop may change)
never shows in the guest's clocks.

Every clock the guest can read is derived from that one guest time, at a documented rate:

- the TSC (RDTSC, RDTSCP, MSR 0x10) runs at ``TSC_HZ``: one tick per instruction;
- the PIT counts at its 1.193182 MHz from guest nanoseconds (``devices/pit.py``);
- the RTC's time of day is the wall clock at the start of the run plus guest time.

So Linux's TSC calibration against the PIT (``quick_pit_calibrate``: it polls PIT channel 2
and reads the TSC in between) measures ``TSC_HZ`` exactly, up to the few instructions of one
poll, and ``/proc/uptime`` and dmesg timestamps count guest nanoseconds. The functions below
are the whole mapping; the backend and the seam use nothing else.
"""

from __future__ import annotations

__all__ = [
    "NS_PER_INSTRUCTION",
    "TSC_HZ",
    "instructions_to_ns",
    "ns_to_tsc",
    "guest_tsc",
    "instructions_until",
]

NS_PER_INSTRUCTION = 1
TSC_HZ = 1_000_000_000
_NS_PER_S = 1_000_000_000
# TSC ticks per instruction, a whole number (RDTSC is hooked: one multiply per call)
_TSC_PER_INSTRUCTION, _rest = divmod(NS_PER_INSTRUCTION * TSC_HZ, _NS_PER_S)
if _rest or not _TSC_PER_INSTRUCTION:
    raise ValueError("the TSC must tick a whole number of times per instruction")


def instructions_to_ns(instructions: int) -> int:
    """Guest nanoseconds that ``instructions`` completed instructions take."""
    return instructions * NS_PER_INSTRUCTION


def ns_to_tsc(ns: int) -> int:
    """TSC ticks in ``ns`` guest nanoseconds (exact at 1 GHz; rounded down otherwise)."""
    return ns * TSC_HZ // _NS_PER_S


def guest_tsc(instructions: int, tsc_offset: int) -> int:
    """The TSC after ``instructions``: their ticks plus the offset (halts, MSR 0x10 writes)."""
    return instructions * _TSC_PER_INSTRUCTION + tsc_offset  # = ns_to_tsc(instructions_to_ns())


def instructions_until(ns: int) -> int:
    """The fewest instructions (at least one) after which ``ns`` more guest time has passed."""
    return max(1, -(-ns // NS_PER_INSTRUCTION))
