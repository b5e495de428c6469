"""Checkpoints: taken by replay work, thinned far from the position within the budget,
and the pages a thinned checkpoint held still restore every later one exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrvmm.replay.checkpoints import PAGE, Checkpoint, CheckpointPolicy, Checkpoints
from rrvmm_cli import rrvmm


def _cp(k: int, pages: dict[int, bytes]) -> Checkpoint:
    return Checkpoint(k, {}, {}, {}, {"landing": 0}, 0, 0, dict(pages))


def _page(byte: int) -> bytes:
    return bytes([byte]) * PAGE


def test_policy_by_exits_or_by_work() -> None:
    assert CheckpointPolicy(every_exits=20).due(40, 0.0)
    assert not CheckpointPolicy(every_exits=20).due(41, 10.0)
    p = CheckpointPolicy(interval_s=0.25)
    assert not p.due(41, 0.2) and p.due(41, 0.3)
    # towards a target: the exits that halve what is left, not closer than a little work
    assert p.due_near(150, 100, 200, 0.01) and not p.due_near(120, 100, 200, 0.01)
    assert not p.due_near(150, 100, 200, 0.0)


def test_thinning_keeps_the_near_ones_and_every_page() -> None:
    store = Checkpoints(CheckpointPolicy(memory=10 * (PAGE + (8 << 10))))
    # page 1 is rewritten at every checkpoint (hot); page k+100 is written once, at k
    for k in range(0, 200, 10):
        store.add(_cp(k, {1: _page(k % 256), 100 + k: _page(k % 256)}))
    truth = {k: (store.page_at(1, k, b""), store.page_at(100 + k, k, b"")) for k in range(200)}
    store.thin(here=190, keep={190})
    assert store.memory_bytes <= store.policy.memory
    assert 0 in store and 190 in store  # the first and the newest stay
    assert store.dropped > 0
    kept = store.order
    # denser near the position: the gaps grow going back from 190
    near = [k for k in kept if k >= 150]
    far = [k for k in kept if k < 100]
    assert len(near) >= len(far) - 1
    for k in kept:  # every remaining checkpoint restores the same pages as before
        assert store.page_at(1, k, b"") == truth[k][0]
        for j in range(0, k + 1, 10):
            assert store.page_at(100 + j, k, b"") == _page(j % 256)


@pytest.mark.parametrize("option", ["--checkpoint-memory", "--checkpoint-every"])
def test_bad_checkpoint_options_are_one_line(tmp_path: Path, option: str) -> None:
    r = rrvmm("replay", str(tmp_path / "none.rrt"), "--console", option, "0")
    assert r.status == 64, r.err
    assert len(r.err.strip().splitlines()) == 1 and option in r.err
