"""Recorder and replayer on small hand-built traces: what a CPU's capabilities put in them.

A CPU that counts instructions (the software one) has a virtual TSC that host time moves
only while the guest halts: the recorder logs each move, the replayer sets it back. Its
forced-exit landings carry the count; a KVM vCPU's carry None.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rrvmm.cpu.backend import RecordableCpu
from rrvmm.host.live_seam import InstructionClockSeam, LiveSeam
from rrvmm.machine.cpu_choice import make_backend
from rrvmm.machine.interrupts import line_vector, pending_vector
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.events import EventKind
from rrvmm.replay.recorder import Recorder
from rrvmm.replay.replayer import ReplayDivergence, Replayer, TraceEnded

MEMORY = 4 << 20


@pytest.fixture
def soft() -> Iterator[RecordableCpu]:
    cpu = make_backend("soft", MEMORY)
    yield cpu
    cpu.close()


def _events(path: Path) -> list[tuple[int, Any]]:
    with TraceReader(path) as reader:
        return [(i, list(ev)) for i, ev in reader.events()]


def test_the_recorder_logs_the_virtual_tsc_a_halt_moved(
    soft: RecordableCpu, tmp_path: Path
) -> None:
    counter = soft.instruction_counter()
    assert counter is not None
    live = InstructionClockSeam(None, counter)
    path = tmp_path / "tsc.rrt"
    with TraceWriter(path, {"test": True}) as writer:
        recorder = Recorder(live, writer, soft)
        recorder.idle(live.clock_ns() + 3_000)  # lands on the deadline however long it slept
        recorder.idle(live.clock_ns())  # due already: the TSC stays, nothing is logged
        writer.close({})
    assert counter.tsc_offset == 3_000
    assert _events(path) == [(0, [EventKind.TSC, 3_000])]


def test_the_replayer_sets_the_virtual_tsc_back(soft: RecordableCpu) -> None:
    counter = soft.instruction_counter()
    assert counter is not None
    trace = [(0, (EventKind.TSC, 1_000)), (0, (EventKind.TSC, 3_000)), (0, (EventKind.TIMER, 7))]
    replayer = Replayer(lambda k: iter(trace[k:]), soft)
    replayer.idle(None)  # the last of several moves holds
    assert counter.tsc_offset == 3_000
    assert replayer.timer_due(0, 500) == 507  # the wake-up: the timer, recorded late by 7
    with pytest.raises(TraceEnded):
        replayer.idle(None)


def test_a_halt_woken_by_nothing_recorded_is_a_divergence(soft: RecordableCpu) -> None:
    trace = [(0, (EventKind.TSC, 5)), (0, (EventKind.CLOCK, 1))]
    replayer = Replayer(lambda k: iter(trace[k:]), soft)
    with pytest.raises(ReplayDivergence, match="wake-up of a halted guest"):
        replayer.idle(None)


@pytest.mark.parametrize("name", [pytest.param("kvm", marks=pytest.mark.kvm), "soft"])
def test_landings_carry_the_count_where_the_cpu_counts(name: str, tmp_path: Path) -> None:
    cpu = make_backend(name, MEMORY)
    try:
        with TraceWriter(tmp_path / "l.rrt", {"test": True}) as writer:
            recorder = Recorder(LiveSeam(None), writer, cpu)
            cpu.set_regs({"rip": 0x1000, "rflags": 2})
            landing = recorder.landing()
            writer.close({})
        counter = cpu.instruction_counter()
        assert landing[0] == EventKind.LANDING
        assert landing[6] == (None if counter is None else counter.instructions)
        assert (counter is None) == (name == "kvm")
        assert len(landing) == 7  # no kernel irqchip: the halted flag is left out
    finally:
        cpu.close()


@pytest.mark.kvm
def test_kvms_own_8259_hands_out_raw_registers_the_model_reads() -> None:
    cpu = make_backend("kvm", MEMORY, irqchip="kernel")
    try:
        chip = cpu.kernel_irqchip()
        assert chip is not None and cpu.instruction_counter() is None
        master, slave = chip.pic_registers()
        assert (master.irr, master.isr) == (0, 0)
        chip.set_irq_line(4, True)  # a rising edge on IRQ4 (COM1)
        regs = chip.pic_registers()
        assert regs[0].irr & (1 << 4)
        assert pending_vector(regs) == line_vector(regs, 4)  # KVM's reset: vector base 0
        chip.set_irq_line(4, False)
    finally:
        cpu.close()
    for name in ("kvm", "soft"):
        other = make_backend(name, MEMORY)
        try:
            assert other.kernel_irqchip() is None  # rrvmm's own 8259
        finally:
            other.close()
