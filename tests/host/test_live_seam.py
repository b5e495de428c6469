"""The live seam's answers, from a CPU whose instruction count the test moves by hand.

Nothing here races host time: deadlines are either already due or land exactly however
long the host slept, and waits end on a condition (input queued, a kick delivered).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest

from rrvmm.host.live_seam import InstructionClockSeam, LiveSeam
from rrvmm.host.terminal import SerialHost


class CountingCpu:
    """An ``InstructionCounting`` CPU (and a kick target) driven by the test."""

    def __init__(self, instructions: int = 0) -> None:
        self.instructions = instructions
        self.tsc_offset = 0
        self.limits: list[int | None] = []
        self.kicked = threading.Event()

    def set_instruction_limit(self, n: int | None) -> None:
        self.limits.append(n)

    def kick(self) -> None:
        self.kicked.set()


@pytest.fixture
def piped_serial() -> Iterator[tuple[SerialHost, int]]:
    """A serial host reading a pipe, and the pipe's write end."""
    r, w = os.pipe()
    serial = SerialHost(output=io.BytesIO(), input_fd=r, raw_tty=False)
    yield serial, w
    os.close(w)  # the reader thread sees EOF and ends
    os.close(r)


def test_guest_time_is_the_instruction_count_and_exits_cost_none() -> None:
    cpu = CountingCpu(12_345)
    seam = InstructionClockSeam(None, cpu)
    assert seam.clock_ns() == 12_345
    assert seam.timer_due(7, None) is None  # the machine tells the seam the exit index
    assert seam.clock_ns() == 12_345  # exits never show in the guest's clocks
    cpu.instructions += 10
    assert seam.clock_ns() == 12_355


def test_a_timer_is_due_exactly_at_its_deadline() -> None:
    cpu = CountingCpu(5_000)
    seam = InstructionClockSeam(None, cpu)
    assert seam.timer_due(0, 5_001) is None
    assert seam.timer_due(0, 5_000) == 5_000
    assert seam.timer_due(0, 4_000) == 5_000  # late: the clock as it stands


@pytest.mark.parametrize(
    ("deadline", "limit"),
    [(None, None), (1_500, 1_500), (1_001, 1_001), (1_000, 1_001), (200, 1_001)],
)
def test_the_cpu_stops_at_the_deadline_instruction(deadline: int | None, limit: int) -> None:
    cpu = CountingCpu(1_000)
    seam = InstructionClockSeam(None, cpu)
    seam.entering_guest(deadline)
    assert cpu.limits == [limit]  # a passed deadline still lets one instruction run


def test_the_limit_ignores_the_exits_so_far() -> None:
    cpu = CountingCpu(1_000)
    seam = InstructionClockSeam(None, cpu)
    seam.timer_due(3, None)
    seam.entering_guest(1_000 + 500)
    assert cpu.limits == [1_500]


def test_idle_lands_on_the_deadline_and_the_tsc_keeps_pace() -> None:
    cpu = CountingCpu(1_000)
    seam = InstructionClockSeam(None, cpu)
    seam.idle(seam.clock_ns() + 2_000)  # sleeps 2 µs, or more: the landing is the same
    assert seam.clock_ns() == 3_000
    assert cpu.tsc_offset == 2_000
    seam.idle(seam.clock_ns() - 100)  # already due: no guest time passes
    assert seam.clock_ns() == 3_000 and cpu.tsc_offset == 2_000
    assert cpu.instructions == 1_000  # idle time is not instructions


def test_input_ends_an_idle_early_by_host_time(piped_serial: tuple[SerialHost, int]) -> None:
    serial, w = piped_serial
    cpu = CountingCpu(1_000)
    seam = InstructionClockSeam(serial, cpu)
    seam.attach(cpu)
    os.write(w, b"k")
    assert cpu.kicked.wait(30), "input did not kick the vCPU"
    gap = 10**12  # 1000 s of guest time: the wait ends on the queued input long before
    seam.idle(seam.clock_ns() + gap)
    advanced = seam.clock_ns() - 1_000
    assert 0 <= advanced < gap
    assert cpu.tsc_offset == advanced
    assert seam.serial_input(0, 16) == b"k"
    assert seam.input_possible()


def test_live_clock_and_deadlines() -> None:
    seam = LiveSeam(None)
    a = seam.clock_ns()
    assert 0 <= a <= seam.clock_ns()
    assert seam.timer_due(0, None) is None
    assert seam.timer_due(0, 1 << 62) is None
    due = seam.timer_due(0, 0)
    assert due is not None and due >= 0
    assert seam.serial_input(0, 16) == b""
    assert not seam.input_possible()  # no serial input, no ports: nothing can wake it
    assert not seam.stop_requested()
    assert len(seam.entropy(0, 32)) == 32


@pytest.mark.parametrize(("due", "poll"), [(True, None), (False, 0)])
def test_live_seam_kicks_at_a_due_deadline_or_poll(due: bool, poll: int | None) -> None:
    cpu = CountingCpu()
    seam = LiveSeam(None)
    seam.attach(cpu)
    try:
        seam.entering_guest(0 if due else None, poll)
        assert cpu.kicked.wait(30), "no kick"
    finally:
        seam.detach()


def test_live_seam_takes_queued_input_up_to_the_room(
    piped_serial: tuple[SerialHost, int],
) -> None:
    serial, w = piped_serial
    cpu = CountingCpu()
    seam = LiveSeam(serial)
    seam.attach(cpu)
    try:
        os.write(w, b"abcdef")  # one write below PIPE_BUF: one read, one queued piece
        assert cpu.kicked.wait(30), "input did not kick the vCPU"
        assert seam.serial_input(0, 4) == b"abcd"
        assert seam.serial_input(0, 4) == b"ef"
        assert seam.serial_input(0, 0) == b""
    finally:
        seam.detach()
