"""Record and replay with KVM's in-kernel 8259 (``--irqchip kernel``).

Interrupts are delivered by KVM without exits; rrvmm only sets the lines, between exits,
and logs each change. These tests show that this is exact: guests whose output depends on
where interrupts land replay bit for bit, and a trace missing one line change does not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.events import EventKind
from rrvmm_cli import rrvmm

pytestmark = pytest.mark.kvm


def _record(tmp_path: Path, kernel: Path, append: str, name: str) -> tuple[Path, object]:
    trace = tmp_path / f"{name}.rrt"
    r = rrvmm(
        "record", "--backend", "kvm", "--irqchip", "kernel", "--kernel", str(kernel),
        "--append", append, "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert r.status == 0, r.err
    return trace, r


@pytest.mark.parametrize(
    ("name", "append"),
    [("irqhash", "hz=1000 loops=1 iters=5000"), ("timer", "")],
    ids=["interrupts-mid-loop", "hlt-idle"],
)
def test_kernel_irqchip_replays_exactly_20_of_20(
    tmp_path: Path,
    guest,
    name: str,
    append: str,  # noqa: ANN001
) -> None:
    outputs = set()
    for i in range(20):
        trace, rec = _record(tmp_path, guest(name), append, f"{name}{i}")
        assert TraceReader(trace).header["machine"]["irqchip"] == "kernel"
        rep = rrvmm("replay", str(trace), stdin=None)
        assert rep.status == 0, f"recording {i}: {rep.err}"
        assert rep.out == rec.out
        outputs.add(rec.out)
    if name == "irqhash":
        # the output really depends on where the interrupts landed: recordings differ
        hashes = {re.search(r"hash=(0x[0-9a-f]+)", o).group(1) for o in outputs}
        assert len(hashes) > 1


def _without(src: Path, dst: Path, kind: EventKind, nth: int) -> int:
    """Copy a trace leaving out the ``nth`` event of ``kind`` that raised an interrupt line
    (a TIMER followed by its IRQ_LINE; a TIMER while the guest masks IRQ0, as in its PIT
    check, changes nothing when dropped); returns its exit index."""
    with TraceReader(src) as r:
        header, events = r.header, list(r.events(0))

    def raises(i: int) -> bool:
        ev = events[i][1]
        if ev[0] == EventKind.IRQ_LINE:
            return bool(ev[2])
        nxt = events[i + 1][1] if i + 1 < len(events) else None
        return nxt is not None and nxt[0] == EventKind.IRQ_LINE and bool(nxt[2])

    dropped = [i for i, (_, ev) in enumerate(events) if ev[0] == kind and raises(i)][nth]
    with TraceWriter(dst, header) as w:
        for i, (idx, ev) in enumerate(events):
            if i != dropped:
                w.append(idx, ev)
        w.close({"exits": events[-1][0]})
    return events[dropped][0]


@pytest.mark.parametrize("kind", [EventKind.IRQ_LINE, EventKind.TIMER])
def test_a_trace_missing_one_interrupt_diverges_there(
    tmp_path: Path,
    guest,
    kind: EventKind,  # noqa: ANN001
) -> None:
    trace, _ = _record(tmp_path, guest("timer"), "", "timer")
    with TraceReader(trace) as r:
        raised = sum(1 for _, ev in r.events(0) if ev[0] == EventKind.IRQ_LINE and ev[2])
    assert raised >= 20
    # trace tools count a raised line as the injection it is
    assert f"injections: {raised}" in rrvmm("trace", "stats", str(trace)).out
    cut = tmp_path / "cut.rrt"
    at = _without(trace, cut, kind, 10)
    rep = rrvmm("replay", str(cut), stdin=None)
    assert rep.status != 0
    m = re.search(r"replay diverged at exit (\d+)", rep.err)
    assert m, rep.err
    assert int(m.group(1)) == at, rep.err


def test_kernel_irqchip_needs_kvm_and_the_recorded_controller(tmp_path: Path, guest) -> None:  # noqa: ANN001
    r = rrvmm("run", "--backend", "soft", "--irqchip", "kernel", "--kernel", str(guest("hello")))
    assert r.status == 64 and "needs the KVM backend" in r.err
    assert len(r.err.strip().splitlines()) == 1
    trace, _ = _record(tmp_path, guest("hello"), "", "hello")
    rep = rrvmm("replay", "--backend", "soft", str(trace))
    assert rep.status == 64 and "replays on the KVM backend only" in rep.err
    rep = rrvmm("replay", "--irqchip", "user", str(trace))
    assert rep.status == 64 and "recorded with --irqchip kernel" in rep.err
    assert len(rep.err.strip().splitlines()) == 1
