"""A kick that lands right after an I/O exit, before the guest's next instruction.

The recording then holds a forced exit with no guest progress since the I/O exit, and
whatever was due then (a timer tick injected, a line raised) happens at that exit. Replay
finds such a landing without running (the state already matches) and reports it as a
forged exit; the interrupt state it reports must be the recording's, or the injection the
recording made there is refused. A real kick hits that window about once in ten runs of
guests/flaky; here it is placed exactly: the KVM_RUN after chosen IN exits is refused
(``KvmBackend.refuse_next_entry``), as a kick arriving before the entry refuses it, and the
host waits for the timer deadline to pass before the machine looks at it.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from rrvmm.cpu.backend import ExitKind
from rrvmm.host.terminal import SerialHost
from rrvmm.kvm.kvm_backend import KvmBackend
from rrvmm.launch import record_guest, replay_trace
from rrvmm.machine.images import GuestImages
from rrvmm.machine.pc import Machine, MachineConfig, MachineStop, RunResult
from rrvmm.replay.container import TraceReader, open_trace
from rrvmm.replay.events import EventKind
from rrvmm.seam import Seam

pytestmark = pytest.mark.kvm

MB = 1 << 20
FORCED = 8  # zero-progress kicks placed per recording
_WAIT_LIMIT_NS = 50_000_000  # a PIT deadline is at most a few ms away at hz=1000


class KickAfterPortExits:
    """Runs a booted machine like ``Machine.run``, but after each of the first ``FORCED``
    port exits taken with interrupts enabled and the PIT running, the next entry is refused
    and the timer deadline allowed to pass before the machine handles that exit.

    An entry that carries an interrupt handed over at the port exit is not refused: a kick
    there is the other case of a forced exit without progress (the interrupt stays
    queued, or pending in KVM's 8259, and the next tick waits behind it).
    """

    def __init__(self) -> None:
        self.forced: list[int] = []  # exit indices of the placed kicks
        self.handed = 0  # interrupts injected or lines changed, by the machine's seam

    def __call__(self, machine: Machine) -> RunResult:
        cpu = machine.cpu
        assert isinstance(cpu, KvmBackend)
        self._count_hand_overs(machine.seam)
        try:
            while True:
                machine.prepare_entry()
                ex = machine.seam.run(cpu)
                place = (
                    ex.kind in (ExitKind.IO_IN, ExitKind.IO_OUT)
                    and len(self.forced) < FORCED
                    and cpu.interrupts_enabled()
                    and machine.pit.next_deadline_ns() is not None
                )
                machine.handle_exit(ex)
                if place:
                    self._kick_before_entry(machine, cpu)
        except MachineStop as stop:
            result = stop.result
        result.exits = machine.exit_index
        return result

    def _count_hand_overs(self, seam: Seam) -> None:
        inject, line = seam.on_inject, seam.on_irq_line

        def on_inject(index: int, vector: int) -> None:
            self.handed += 1
            inject(index, vector)

        def on_irq_line(index: int, line_: int, level: bool) -> None:
            self.handed += 1
            line(index, line_, level)

        seam.on_inject = on_inject  # type: ignore[method-assign]
        seam.on_irq_line = on_irq_line  # type: ignore[method-assign]

    def _kick_before_entry(self, machine: Machine, cpu: KvmBackend) -> None:
        handed = self.handed
        machine.prepare_entry()
        if self.handed != handed:
            machine.handle_exit(machine.seam.run(cpu))
            return
        cpu.refuse_next_entry()
        ex = machine.seam.run(cpu)
        assert ex.kind is ExitKind.INTR
        deadline = machine.pit.next_deadline_ns()
        live = machine.seam.live  # the recorder's live side: host time, unlogged
        give_up = time.monotonic_ns() + _WAIT_LIMIT_NS
        while deadline is not None and live.clock_ns() < deadline:
            assert time.monotonic_ns() < give_up, "the PIT deadline never came"
            time.sleep(0.0002)
        machine.handle_exit(ex)
        self.forced.append(machine.exit_index)


def _events_at(trace: Path, index: int) -> list[list]:
    with TraceReader(trace) as r:
        return [list(ev) for i, ev in r.events(index) if i == index]


@pytest.mark.parametrize("irqchip", ["user", "kernel"])
def test_kick_right_after_an_io_exit_replays_exactly(
    tmp_path: Path,
    guest,
    irqchip: str,  # noqa: ANN001
) -> None:
    images = GuestImages.load(guest("flaky"))
    config = MachineConfig(memory=32 * MB, kernel_name="flaky", cmdline="hz=1000 ticks=20")
    recorded = io.BytesIO()
    trace = tmp_path / "k.rrt"
    drive = KickAfterPortExits()
    cpu = KvmBackend(config.memory, irqchip=irqchip)
    try:
        result, _ = record_guest(
            images, config, cpu, SerialHost(output=recorded, input_fd=None), trace, drive
        )
    finally:
        cpu.close()
    assert result.status in (0, 3), result.reason  # 3: flaky lost an update, as it may
    assert len(drive.forced) == FORCED

    after = set()
    delivered = 0
    for k in drive.forced:
        exits = [e for e in _events_at(trace, k - 1) if e[0] == EventKind.EXIT]
        after.add(ExitKind(exits[-1][1]))
        events = _events_at(trace, k)
        assert events[0][0] == EventKind.EXIT and ExitKind(events[0][1]) is ExitKind.INTR
        assert events[1][0] == EventKind.LANDING and events[1][5]  # the guest may have run
        assert events[2][0] == EventKind.TIMER
        delivered += any(
            e[0] == EventKind.INJECT or (e[0] == EventKind.IRQ_LINE and e[2]) for e in events[2:]
        )
    assert after == {ExitKind.IO_IN, ExitKind.IO_OUT}
    # the tick was handed over at the kick: what replay must do there too
    assert delivered == FORCED

    # on KVM, and (rrvmm's own 8259 only) on the software CPU, which forges them too
    for backend in ("kvm", "soft") if irqchip == "user" else ("kvm",):
        replayed = io.BytesIO()
        outcome = replay_trace(open_trace(trace), output=replayed, backend=backend)
        assert outcome.matched, outcome.divergence and outcome.divergence.report()
        assert outcome.result is not None and outcome.result.status == result.status
        assert replayed.getvalue() == recorded.getvalue()
        if backend == "kvm":  # the kicks' states were found at once, without running
            assert outcome.replayer.stats.forged >= FORCED
