"""The Debian kernel on the software CPU sees the documented guest clock (docs/guest-time.md):
it calibrates its TSC against the PIT at 1 GHz, and /proc/uptime advances by the
instructions it executes at one nanosecond each (plus the time it spent halted).

The instruction counts come from the trace: every forced exit (a timer interrupt) records
the exact count, and every halt the TSC offset after it.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_linux_guest import APPEND, MACHINE

from rrvmm.cpu.guest_clock import NS_PER_INSTRUCTION, TSC_HZ
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind
from rrvmm.replay.timeline import SerialDecoder
from rrvmm_cli import rrvmm

QUICK_PIT_PPM = 500  # quick_pit_calibrate iterates until its error is below 500 ppm
BUSY = "i=0; while [ $i -lt 15000 ]; do i=$((i+1)); done"
RUN = f"cat /proc/uptime; {BUSY}; cat /proc/uptime"
UPTIME = re.compile(r"^(\d+\.\d\d) \d+\.\d\d$")


def _uptime_lines(trace: Path) -> list[tuple[int, float]]:
    """(exit index, seconds) of the lines /proc/uptime printed, from the recorded writes."""
    out: list[tuple[int, float]] = []
    decoder = SerialDecoder()
    with TraceReader(trace) as r:
        for idx, ev in r.events():
            if ev[0] == EventKind.EXIT and ev[1] == 2:  # IO_OUT
                for at, text in decoder.lines(decoder.out(ev[2], ev[3], ev[4]), idx):
                    m = UPTIME.match(text.strip())
                    if m:
                        out.append((at, float(m.group(1))))
    return out


def _clock_points(trace: Path) -> list[tuple[int, int, int]]:
    """(exit index, instructions, halted ns so far) at every forced exit of the trace."""
    points = []
    halted = 0
    with TraceReader(trace) as r:
        for idx, ev in r.events():
            if ev[0] == EventKind.TSC:
                halted = ev[1] * 1_000_000_000 // TSC_HZ  # the offset moves only with halts
            elif ev[0] == EventKind.LANDING and ev[6] is not None:
                points.append((idx, ev[6], halted))
    return points


def test_tsc_calibrates_at_1ghz_and_uptime_counts_instructions(tmp_path: Path) -> None:
    trace = tmp_path / "time.rrt"
    rec = rrvmm(
        "record", *MACHINE, "--append", f'{APPEND} rrvmm.shell=0 rrvmm.run="{RUN}"',
        "-o", str(trace), stdin=None, timeout=400,
    )  # fmt: skip
    assert rec.status == 0, rec.err

    mhz = float(re.search(r"tsc: Detected (\d+\.\d+) MHz processor", rec.out).group(1))
    expected_mhz = TSC_HZ / 1e6
    assert abs(mhz - expected_mhz) / expected_mhz < QUICK_PIT_PPM * 1e-6, rec.out
    bogomips = float(re.search(r"(\d+\.\d+) BogoMIPS", rec.out).group(1))
    assert abs(bogomips - 2 * mhz) < 0.01 * mhz  # loops_per_jiffy from tsc_khz

    (exit1, up1), (exit2, up2) = _uptime_lines(trace)
    points = _clock_points(trace)
    # the forced exits nearest inside the interval between the two readings (timer ticks
    # every 4 ms of guest time while the loop runs)
    first = next(p for p in points if p[0] > exit1)
    last = [p for p in points if p[0] < exit2][-1]
    instructions = last[1] - first[1]
    halted_ns = last[2] - first[2]
    guest_s = (instructions * NS_PER_INSTRUCTION + halted_ns) / 1e9
    assert up2 - up1 > 0.15, "the loop should take a measurable time"
    assert instructions * NS_PER_INSTRUCTION > 4 * halted_ns  # the loop ran, mostly busy
    # /proc/uptime has 10 ms steps; the forced exits lie within a tick or two of the lines
    assert abs((up2 - up1) - guest_s) < 0.03 + 0.01 * guest_s, (up1, up2, guest_s)

    # and from the start: uptime counts from timekeeping_init, a little after reset
    start_ns = points[0][1] * NS_PER_INSTRUCTION + points[0][2]
    before = next(p for p in reversed(points) if p[0] < exit1)
    at_first = (before[1] * NS_PER_INSTRUCTION + before[2]) / 1e9
    assert start_ns > 0 and 0 <= at_first - up1 < 0.5, (at_first, up1)
