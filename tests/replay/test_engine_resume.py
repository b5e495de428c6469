"""The debugger's engine resumes from a stop right after an exit where rrvmm injects.

A ``continue`` from such a stop prepares the interval (the injection) and then steps off
the stop's address; that step must deliver the injected interrupt as the recording's entry
did (stopping at the handler's first instruction), not single-step the interrupted code
with the interrupt held back, or replay leaves the recording a few exits later.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rrvmm.replay.container import TraceReader, open_trace
from rrvmm.replay.engine import ReplayEngine
from rrvmm.replay.events import EventKind
from rrvmm.target import StopKind
from rrvmm_cli import rrvmm

pytestmark = pytest.mark.kvm

STOPS = 3  # exits with an injection to resume from


def _injecting_exits(trace: Path) -> list[int]:
    """Exits after which rrvmm injected an interrupt (with more exits after them)."""
    with TraceReader(trace) as r:
        events = list(r.events(0))
    last = events[-1][0]
    return [i for i, ev in events if ev[0] == EventKind.INJECT and 0 < i < last - 3]


def test_continue_from_an_exit_that_injects_replays_to_the_end(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace = tmp_path / "f.rrt"
    rec = rrvmm(
        "record", "--backend", "kvm", "--irqchip", "user", "--kernel", str(guest("flaky")),
        "--append", "hz=1000 ticks=10", "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert trace.exists(), rec.err
    stops = _injecting_exits(trace)
    assert len(stops) >= STOPS
    with open_trace(trace) as reader:
        for k in stops[:STOPS]:
            eng = ReplayEngine(reader)
            try:
                eng.goto_exit(k)
                assert eng.position().exit_index == k
                assert eng.resume().kind is StopKind.REPLAY_END  # no divergence on the way
                assert eng.machine.exit_index == eng.total_exits
                assert eng.end_reason is not None
            finally:
                eng.close()
