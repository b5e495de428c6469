"""Guest time on the software CPU: the documented rates, through the real backend and PIT.

One instruction is one nanosecond of guest time, the TSC runs at 1 GHz, the PIT at
1.193182 MHz of the same guest time, and a halt moves all of them on together. The tsccal
guest measures the TSC against PIT channel 2 as Linux's quick_pit_calibrate does.
"""

from __future__ import annotations

import re

from rrvmm.cpu import guest_clock as G
from rrvmm.devices.pit import PIT_HZ
from rrvmm.host.live_seam import InstructionClockSeam
from rrvmm.soft.backend import SoftBackend
from rrvmm_cli import rrvmm

MSR_TSC = 0x10
RFLAGS_IF = 0x200


def test_the_mapping_is_the_documented_rate() -> None:
    assert G.NS_PER_INSTRUCTION == 1 and G.TSC_HZ == 1_000_000_000
    for n in (0, 1, 7, 1_605_000_000, 1 << 50):
        assert G.instructions_to_ns(n) == n
        assert G.ns_to_tsc(G.instructions_to_ns(n)) == n  # one TSC tick per instruction
        assert G.guest_tsc(n, 123) == n + 123
    assert [G.instructions_until(ns) for ns in (-5, 0, 1, 2, 1000)] == [1, 1, 1, 2, 1000]


def _nops_then(cpu: SoftBackend, tail: bytes, nops: int = 10) -> None:
    cpu.write_memory(0x1000, b"\x90" * nops + tail)
    cpu.set_regs({**cpu.get_regs(), "rip": 0x1000, "rflags": 0x2 | RFLAGS_IF})


def test_seam_tsc_and_wall_clock_share_one_guest_time() -> None:
    cpu = SoftBackend(1 << 20, [])
    _nops_then(cpu, b"\x0f\x31\xf4")  # 10 NOPs, RDTSC, HLT
    seam = InstructionClockSeam(None, cpu)
    wall0 = seam.wall_time()
    cpu.run()
    assert cpu.instructions == 12
    assert cpu.get_regs()["rax"] == 10  # RDTSC read after the 10 NOPs
    assert seam.clock_ns() == cpu.get_msrs([MSR_TSC])[MSR_TSC] == 12

    deadline = 2_000_012  # halted until a device deadline 2 ms on: guest time lands on it
    seam.idle(deadline)
    assert seam.clock_ns() == deadline == cpu.get_msrs([MSR_TSC])[MSR_TSC]
    # the RTC's time of day follows guest time (to a float's resolution at today's date)
    assert abs(seam.wall_time() - wall0 - deadline / 1e9) < 1e-6

    seam.entering_guest(deadline + 3)  # a deadline 3 ns ahead is 3 instructions ahead
    assert cpu.instruction_limit == cpu.instructions + 3


def test_guest_measures_the_tsc_at_1ghz_against_pit_channel_2(guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", "soft", "--kernel", str(guest("tsccal")))
    assert r.status == 0, r.err
    m = re.search(r"tsc (\d+) pit (\d+) polls (\d+)", r.out)
    assert m, r.out
    tsc, pit, polls = map(int, m.groups())
    hz = tsc * PIT_HZ / pit
    # the error is at most one poll (a few instructions) at each end of ~858 us
    assert abs(hz - G.TSC_HZ) / G.TSC_HZ < 1e-4, hz
    assert polls > 1000  # port reads cost no guest time: many polls per PIT clock
