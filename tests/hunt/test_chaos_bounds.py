"""ChaosSeam's promises, for any seed: the clock never goes back and runs ahead by at most
the jitter bound; a timer is never due before its deadline, and at the latest after the
stall bound; a kick comes at most the early bound before the deadline."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rrvmm.host.chaos import ChaosSeam, ChaosSettings
from rrvmm.host.live_seam import LiveSeam


class SteppedClock(LiveSeam):
    """A live seam whose host clock is set by the test instead of read from the host."""

    def __init__(self) -> None:
        super().__init__(None)
        self.now = 0
        self.armed: list[int | None] = []

    def clock_ns(self) -> int:
        return self.now

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        if deadline_ns is None:
            return None
        return self.now if self.now >= deadline_ns else None

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        self.armed.append(deadline_ns)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    steps=st.lists(st.integers(1, 300_000), min_size=1, max_size=200),
    period=st.integers(100_000, 10_000_000),
)
def test_chaos_stays_within_its_bounds(seed: int, steps: list[int], period: int) -> None:
    s = ChaosSettings(seed)
    live = SteppedClock()
    chaos = ChaosSeam(live, s)
    deadline = period
    last_clock = 0
    for i, step in enumerate(steps):
        chaos.entering_guest(deadline)
        armed = live.armed[-1]
        assert armed is not None and armed >= deadline - s.early_kick_max_ns
        assert armed <= deadline + s.timer_stall_max_ns
        live.now += step
        c = chaos.clock_ns()
        assert last_clock <= c and live.now <= c <= live.now + s.clock_jitter_max_ns
        last_clock = c
        due = chaos.timer_due(i, deadline)
        if live.now < deadline:
            assert due is None
        if live.now >= deadline + s.timer_stall_max_ns:
            assert due is not None
        if due is not None:
            assert due >= deadline and due >= last_clock
            last_clock = due
            deadline += period
