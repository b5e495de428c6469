"""The replayer on its own, over small traces written by hand with ``TraceWriter``: what it
answers, where it lands forced exits, and how it reports leaving the recorded timeline.

A scripted CPU (``fake_cpu``) stands in for the guest; the machine is left out: the tests
call the seam as the machine would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_cpu import PAGE, FakeCpu, Step

from rrvmm.cpu.backend import ExitKind, VcpuExit
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.events import EventKind
from rrvmm.replay.fingerprint import landing_payload
from rrvmm.replay.replayer import ReplayDivergence, Replayer, TraceEnded
from rrvmm.target import TargetDiverged

E = EventKind
RIP0 = 0x100000  # the scripted guest's RIP after n instructions is RIP0 + n


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[Any]:
    """replay(events, cpu, **kw): a Replayer over a trace holding ``events``."""
    readers: list[TraceReader] = []
    replayers: list[Replayer] = []

    def make(events: list[tuple[int, list]], cpu: FakeCpu, **kw: Any) -> Replayer:
        path = tmp_path / f"t{len(readers)}.rrt"
        with TraceWriter(path, {"test": "replayer"}, chunk_events=2) as writer:
            for idx, ev in events:
                writer.append(idx, ev)
            writer.close({"exits": max((i for i, _ in events), default=0)})
        reader = TraceReader(path)
        readers.append(reader)
        replayer = Replayer(reader.events, cpu, **kw)
        replayers.append(replayer)
        return replayer

    yield make
    for r in replayers:
        r.close()
    for reader in readers:
        reader.close()


def io_exit(kind: ExitKind, port: int, data: bytes = b"", rip: int = 0x1234) -> VcpuExit:
    ex = VcpuExit()
    ex.kind, ex.addr, ex.size, ex.data, ex.rip = kind, port, 1, data, rip
    return ex


INPUTS = [
    (0, [E.CLOCK, 1000]),
    (1, [E.EXIT, ExitKind.IO_OUT, 0x3F8, 1, ord("A"), 0x1001]),
    (1, [E.SERIAL_RX, b"hi"]),
    (2, [E.EXIT, ExitKind.IO_IN, 0x3FD, 1, 0x60, 0x1002]),
    (2, [E.WALL, 1.7e9]),
    (2, [E.TIMER, 300]),
    (2, [E.INJECT, 0x20]),
    (2, [E.ENTROPY, b"\x01\x02"]),
    (2, [E.DEVICE_INPUT, "console", b"typed"]),
]


def test_answers_come_from_the_trace(replay: Any) -> None:
    r = replay(INPUTS, FakeCpu([]))
    assert r.clock_ns() == 1000
    r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1001))
    assert r.serial_input(1, 16) == b"hi"
    assert r.serial_input(1, 16) == b""  # nothing more typed at this exit
    read = io_exit(ExitKind.IO_IN, 0x3FD, rip=0x1002)
    r.on_exit(2, read)
    assert r.read_value(2, read, b"\x60") == b"\x60"  # the device model agrees
    assert r.wall_time() == 1.7e9
    assert r.timer_due(2, 5000) == 5300  # the deadline plus its recorded lateness
    assert r.timer_due(2, 9000) is None
    r.on_inject(2, 0x20)
    assert r.entropy(2, 2) == b"\x01\x02"
    assert r.device_input(2, "net", 1514) == b""  # the next input is for the console
    assert r.device_input(2, "console", 64) == b"typed"
    assert r.at_end and r.last_match == 2
    with pytest.raises(TraceEnded):
        r.clock_ns()


@pytest.mark.parametrize(
    ("act", "what"),
    [
        (lambda r: r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x2F8, b"A", rip=0x1001)), "exit"),
        (lambda r: r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"B", rip=0x1001)), "exit"),
        (lambda r: r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1009)), "exit"),
        (lambda r: r.on_inject(0, 0x20), "interrupt injection"),
        (lambda r: r.wall_time(), "RTC read the wall clock"),
    ],
    ids=["port", "value", "rip", "injection", "event"],
)
def test_leaving_the_timeline_is_reported(replay: Any, act: Any, what: str) -> None:
    r = replay(INPUTS, FakeCpu([]))
    r.clock_ns()
    with pytest.raises(ReplayDivergence) as info:
        act(r)
    d = info.value
    assert isinstance(d, TargetDiverged)  # what the debugger faces catch
    assert d.what == what
    assert "\n" not in str(d) and str(d).startswith("replay diverged at exit ")


def test_a_read_the_device_model_answers_differently(replay: Any) -> None:
    r = replay(INPUTS, FakeCpu([]))
    r.clock_ns()
    r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1001))
    r.serial_input(1, 16)
    read = io_exit(ExitKind.IO_IN, 0x3FD, rip=0x1002)
    r.on_exit(2, read)
    with pytest.raises(ReplayDivergence) as info:
        r.read_value(2, read, b"\x61")
    d = info.value
    assert (d.index, d.what, d.last_match) == (2, "value read from IO_IN 0x3fd", 1)
    assert (d.expected, d.actual) == ("60 (recorded)", "61 (device model)")


def test_recorded_input_larger_than_the_fifo_is_a_divergence(replay: Any) -> None:
    r = replay(INPUTS, FakeCpu([]))
    r.clock_ns()
    r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1001))
    with pytest.raises(ReplayDivergence, match="UART receive room"):
        r.serial_input(1, 1)


def test_the_cursor_goes_back(replay: Any) -> None:
    """A checkpoint keeps the cursor; restoring it gives the same answers again."""
    r = replay(INPUTS, FakeCpu([]))
    r.clock_ns()
    r.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1001))
    saved = r.cursor()
    assert r.serial_input(1, 16) == b"hi"
    read = io_exit(ExitKind.IO_IN, 0x3FD, rip=0x1002)
    r.on_exit(2, read)
    r.read_value(2, read, b"\x60")
    r.set_cursor(saved)
    assert r.serial_input(1, 16) == b"hi"
    r.on_exit(2, read)
    assert r.read_value(2, read, b"\x60") == b"\x60"


def test_idle_takes_the_tsc_and_wants_a_wake_up(replay: Any) -> None:
    cpu = FakeCpu([])
    r = replay(
        [(1, [E.EXIT, ExitKind.HLT, 0, 1, 0, 0x10]), (1, [E.TSC, 5]), (1, [E.TSC, 9]),
         (1, [E.TIMER, 0]), (2, [E.EXIT, ExitKind.HLT, 0, 1, 0, 0x10]), (2, [E.CLOCK, 1])],
        cpu,
    )  # fmt: skip
    r.on_exit(1, io_exit(ExitKind.HLT, 0, rip=0x10))
    r.idle(100)
    assert cpu.tsc_offset == 9  # the recorder idled twice: the last offset holds
    assert r.timer_due(1, 100) == 100
    r.on_exit(2, io_exit(ExitKind.HLT, 0, rip=0x10))
    with pytest.raises(ReplayDivergence, match="wake-up of a halted guest"):
        r.idle(None)  # the recording went on without a wake-up here


# --------------------------------------------------------------------- forced exits
STORE = (3 * PAGE, b"\x5a" * 16)


def guest() -> list[Step]:
    return [Step(10, ExitKind.IO_OUT, 0x80, 1, b"\x01", writes=(STORE,)), Step(90, ExitKind.HLT)]


def recorded_landing(at: int, progressed: bool = True, counted: bool = True) -> list:
    """What the recorder logs for a kick ``at`` instructions into the same guest."""
    cpu = FakeCpu(guest())
    cpu.dirty_bitmap()
    cpu.run()
    cpu.set_instruction_limit(at)
    cpu.run()
    return landing_payload(
        cpu.get_regs(), cpu.dirty_bitmap(), cpu.ram_page, progressed, at if counted else None
    )


def kicked_at(at: int, **landing: bool) -> list[tuple[int, list]]:
    return [
        (1, [E.EXIT, ExitKind.IO_OUT, 0x80, 1, 1, RIP0 + 10]),
        (2, [E.EXIT, ExitKind.INTR, 0, 0, 0, RIP0 + at]),
        (2, recorded_landing(at, **landing)),
    ]


def run_exits(r: Replayer, cpu: FakeCpu, n: int) -> list[VcpuExit]:
    out = []
    for k in range(1, n + 1):
        ex = r.run(cpu)
        r.on_exit(k, ex)
        out.append(ex)
    return out


def test_a_counting_cpu_lands_by_count(replay: Any) -> None:
    cpu = FakeCpu(guest())
    r = replay(kicked_at(47), cpu, exact_counts=True)
    r.booted()
    _, kicked = run_exits(r, cpu, 2)
    assert kicked.kind is ExitKind.INTR and cpu.instructions == 47
    assert r.at_end and r.stats.landings == 1 and not cpu.debug  # no breakpoint search


def test_a_landing_the_guest_never_ran_to_is_forged(replay: Any) -> None:
    cpu = FakeCpu(guest())
    r = replay(kicked_at(10, progressed=False), cpu, exact_counts=True)
    r.booted()
    run_exits(r, cpu, 2)
    assert cpu.forged == [(ExitKind.INTR, RIP0 + 10)]
    assert r.stats.forged == 1 and r.at_end


def test_a_cpu_already_in_the_recorded_state_is_there(replay: Any) -> None:
    """Without counts the fingerprint decides: registers and the pages written since."""
    cpu = FakeCpu(guest())
    r = replay(kicked_at(10, counted=False), cpu)
    r.booted()
    run_exits(r, cpu, 2)
    assert cpu.forged == [(ExitKind.INTR, RIP0 + 10)] and r.at_end


def test_other_memory_is_not_the_recorded_state(replay: Any) -> None:
    """Equal registers but a different store: no landing; the next real exit is reported
    against the recorded forced exit."""
    cpu = FakeCpu(guest())
    cpu.script[0].writes = ((3 * PAGE, b"\x5b" * 16),)
    r = replay(kicked_at(10, counted=False), cpu)
    r.booted()
    r.on_exit(1, r.run(cpu))
    ex = r.run(cpu)  # searches with a breakpoint at the recorded RIP, meets the HLT
    assert cpu.debug[0] == ([RIP0 + 10], False) and cpu.debug[-1] == ([], False)
    assert ex.kind is ExitKind.HLT and not cpu.forged
    with pytest.raises(ReplayDivergence, match="exit: expected INTR .* got HLT"):
        r.on_exit(2, ex)
