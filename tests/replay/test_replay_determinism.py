"""Replaying the same trace twice goes through identical states."""

from __future__ import annotations

from pathlib import Path

import pytest
import xxhash

from rrvmm.launch import replay_trace
from rrvmm.replay.container import open_trace
from rrvmm.replay.replayer import ExitCheck
from rrvmm_cli import rrvmm

pytestmark = pytest.mark.kvm


def _states(trace: Path, every: int) -> list[tuple[int, tuple, int]]:
    seen: list[tuple[int, tuple, int]] = []

    def check(index: int, cpu) -> None:  # noqa: ANN001
        regs = tuple(sorted(cpu.get_regs().items()))
        seen.append((index, regs, xxhash.xxh3_64_intdigest(cpu.memory)))

    with open_trace(trace) as reader:
        outcome = replay_trace(reader, check=ExitCheck(every, check))
    assert outcome.matched and outcome.divergence is None
    return seen


def test_two_replays_identical_at_every_nth_exit(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace = tmp_path / "t.rrt"
    r = rrvmm("record", "--kernel", str(guest("irqhash")), "--append", "hz=1000 loops=1",
              "-o", str(trace), stdin=None)  # fmt: skip
    assert r.status == 0, r.err
    first = _states(trace, 7)
    second = _states(trace, 7)
    assert len(first) > 20
    assert first == second
