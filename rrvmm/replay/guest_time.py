"""The guest time of every exit of a trace, worked out from the trace alone.

A trace is ordered by exits, but people think in guest time: the timeline's x axis, "how
long did the boot take", "what was the guest doing at 1.2 s". No event stamps every exit
with the time, so the time is rebuilt from the events that do carry it:

- CLOCK ``[clock_ns]``: a device read the guest clock while handling that exit: exact.
- LANDING with an instruction count (software backend): guest time there is
  ``instructions_to_ns(count)`` plus the time the guest spent halted so far
  (``cpu.guest_clock``), exact.
- TSC ``[tsc_offset]`` (software backend): the guest halted in that exit and its clocks
  moved on; the offset grew by the halted time. Exits after it are that much later.
- the footer's ``guest_ns``: the guest clock when the recording ended (traces from before
  it was written lack it).

Between two anchors the exits are spread evenly, and the halted time is added as a step
right after the exit that halted, so a long wait shows as a gap rather than as slow exits.
Before the first anchor the guest clock starts at 0 at exit 0. Where a trace holds no anchor
at all (an old trace of a guest that never read the clock), every exit is at time 0 and
``known`` is False: callers fall back to the exit index.

A guest that writes the TSC MSR (0x10) shifts the software backend's TSC offset by what it
wrote, which this reading takes for halted time; Linux does not.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from rrvmm.cpu.guest_clock import TSC_HZ, instructions_to_ns
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind

__all__ = ["GuestTimeMap", "guest_time_map"]

_CLOCK = int(EventKind.CLOCK)
_LANDING = int(EventKind.LANDING)
_TSC = int(EventKind.TSC)
_LANDING_INSNS = 6  # position of the instruction count in a LANDING event
_MAX_KNOTS = 1 << 20  # beyond this, every other knot is dropped (memory stays bounded)
_MAX_HALTS = 100_000  # halts kept for drawing


class GuestTimeMap:
    """A piecewise-linear, non-decreasing map from exit index to guest nanoseconds."""

    def __init__(
        self,
        exits: array,
        ns: array,
        last_exit: int,
        known: bool,
        anchored: int = 0,
        halts: list[tuple[int, int]] | None = None,
    ) -> None:
        self.exits = exits  # knots: exit indices, non-decreasing
        self.ns = ns  # knots: guest ns, non-decreasing
        self.last_exit = last_exit
        self.known = known
        self.anchored = anchored  # exits whose time the trace gives exactly
        self.halts = halts or []  # (start ns, end ns) the guest spent halted (soft backend)

    @property
    def end_ns(self) -> int:
        return int(self.ns[-1]) if self.ns else 0

    def at(self, exit_index: float) -> float:
        """Guest ns of an exit (fractional exits interpolate)."""
        xs, ys = self.exits, self.ns
        i = bisect_left(xs, exit_index)
        if i < len(xs) and xs[i] == exit_index:
            return float(ys[i])  # the first knot of that exit: before any halt in it
        if i == 0:
            return float(ys[0]) if ys else 0.0
        if i == len(xs):
            return float(ys[-1])
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (exit_index - x0) / (x1 - x0)

    def exit_at(self, ns: float) -> float:
        """The (fractional) exit index at guest time ``ns``; the inverse of ``at``."""
        xs, ys = self.exits, self.ns
        i = bisect_right(ys, ns)
        if i == 0:
            return float(xs[0]) if xs else 0.0
        if i == len(ys):
            return float(xs[-1])
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return x0 + (x1 - x0) * (ns - y0) / (y1 - y0) if y1 > y0 else float(x0)


class _Builder:
    """Collects anchors in trace order; ``finish`` turns them into knots."""

    def __init__(self) -> None:
        self.base: list[tuple[int, int]] = []  # (exit, guest ns minus halted time so far)
        self.steps: list[tuple[int, int]] = []  # (exit, halted time after that exit)
        self.halted = 0
        self.tsc_offset: int | None = None

    def event(self, idx: int, ev: list) -> None:
        kind = ev[0]
        if kind == _CLOCK:
            self._anchor(idx, int(ev[1]) - self.halted)
        elif kind == _LANDING and len(ev) > _LANDING_INSNS and ev[_LANDING_INSNS] is not None:
            self._anchor(idx, instructions_to_ns(int(ev[_LANDING_INSNS])))
        elif kind == _TSC:
            offset = int(ev[1])
            self.halted += (offset - (self.tsc_offset or 0)) * 1_000_000_000 // TSC_HZ
            self.tsc_offset = offset
            self.steps.append((idx, self.halted))

    def _anchor(self, idx: int, base_ns: int) -> None:
        b = self.base
        if len(b) >= 2 and b[-1][0] == idx and b[-2][0] == idx:
            b[-1] = (idx, base_ns)  # keep the first and last anchor of each exit
        else:
            b.append((idx, base_ns))
        if len(b) > _MAX_KNOTS:
            self.base = b[::2] + ([b[-1]] if len(b) % 2 == 0 else [])

    def finish(self, last_exit: int, end_ns: int | None) -> GuestTimeMap:
        known = bool(self.base) or end_ns is not None
        base = [(0, 0), *self.base]
        halted_at_end = self.halted
        if end_ns is not None:
            base.append((max(last_exit, base[-1][0]), end_ns - halted_at_end))
        # the halted time as a step function of the exit index
        step_exits = [e for e, _ in self.steps]
        step_values = [h for _, h in self.steps]

        def halted_before(e: float) -> int:
            """Halted time seen by exit ``e``: the steps of the exits before it."""
            i = bisect_left(step_exits, e)
            return step_values[i - 1] if i else 0

        bx = [e for e, _ in base]
        by = [v for _, v in base]

        def base_at(e: float) -> float:
            i = bisect_left(bx, e)
            if i < len(bx) and bx[i] == e:
                return float(by[i])
            if i == len(bx):
                return float(by[-1])
            x0, x1, y0, y1 = bx[i - 1], bx[i], by[i - 1], by[i]
            return y0 + (y1 - y0) * (e - x0) / (x1 - x0)

        points = set(bx)
        for e, _ in self.steps:
            points.update((e, e + 1))
        points.add(last_exit)
        xs = array("q")
        ys = array("q")
        prev = 0
        for e in sorted(p for p in points if 0 <= p <= max(last_exit, 0)):
            t = max(prev, round(base_at(e)) + halted_before(e))
            if xs and xs[-1] == e:
                continue
            xs.append(e)
            ys.append(t)
            prev = t
        ends = {last_exit} if end_ns is not None else set()
        anchored = len({e for e, _ in self.base} | ends)
        halts: list[tuple[int, int]] = []
        before = 0
        for e, after in self.steps:
            start = round(base_at(e)) + before
            if after > before:
                if halts and halts[-1][1] >= start:  # back to back: one halt
                    halts[-1] = (halts[-1][0], start + after - before)
                elif len(halts) < _MAX_HALTS:
                    halts.append((start, start + after - before))
            before = after
        return GuestTimeMap(xs, ys, last_exit, known, anchored, halts)


def guest_time_map(
    reader: TraceReader, progress: Callable[[int, int], None] | None = None
) -> GuestTimeMap:
    """One pass over the trace's events: the guest time of every exit."""
    last_exit = reader.chunks[-1].last_exit if reader.chunks else 0
    b = _Builder()
    step = max(1, last_exit // 100)
    next_tick = 0
    for idx, ev in reader.events():
        b.event(idx, ev)
        if progress is not None and idx >= next_tick:
            progress(idx, last_exit)
            next_tick = idx + step
    end = (reader.footer or {}).get("guest_ns")
    return b.finish(last_exit, None if end is None else int(end))
