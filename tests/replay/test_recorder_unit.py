"""The recorder on its own: what it writes for each answer and exit, read back from the file.

A scripted CPU (``fake_cpu``) and a scripted live seam stand in for the guest and the host;
the trace is a real file written by ``TraceWriter`` and read by ``TraceReader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fake_cpu import PAGE, FakeCpu, Step

from rrvmm.cpu.backend import ExitKind, VcpuExit
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.events import EventKind
from rrvmm.replay.fingerprint import memory_fingerprint, regs_fingerprint
from rrvmm.replay.recorder import Recorder
from rrvmm.seam import Seam


class ScriptedLive(Seam):
    """The host's answers, given in advance; each is used once, in order."""

    def __init__(self, cpu: FakeCpu, **answers: list[Any]) -> None:
        self.cpu = cpu
        self.answers = answers

    def _next(self, what: str) -> Any:
        return self.answers[what].pop(0)

    def clock_ns(self) -> int:
        return self._next("clock")

    def wall_time(self) -> float:
        return self._next("wall")

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        return self._next("timer")

    def serial_input(self, index: int, room: int) -> bytes:
        return self._next("serial")[:room]

    def device_input(self, index: int, device: str, room: int) -> bytes:
        return self._next(device)

    def entropy(self, index: int, size: int) -> bytes:
        return self._next("entropy")[:size]

    def idle(self, deadline_ns: int | None) -> None:
        self.cpu.tsc_offset += self._next("idle_tsc")  # host time passes while halted


def io_exit(kind: ExitKind, port: int, data: bytes = b"", rip: int = 0x1234) -> VcpuExit:
    ex = VcpuExit()
    ex.kind, ex.addr, ex.size, ex.data, ex.rip = kind, port, 1, data, rip
    return ex


def events(path: Path) -> list[tuple[int, list]]:
    with TraceReader(path) as reader:
        return [(idx, list(ev)) for idx, ev in reader.events()]


def test_every_answer_is_logged_with_its_exit(tmp_path: Path) -> None:
    cpu = FakeCpu([])
    live = ScriptedLive(
        cpu, clock=[1000], wall=[1.7e9], serial=[b"hi", b""], timer=[5300, None],
        entropy=[b"\x01\x02"], console=[b"", b"typed"],
    )  # fmt: skip
    trace = tmp_path / "t.rrt"
    with TraceWriter(trace, {"test": "recorder"}) as writer:
        rec = Recorder(live, writer, cpu)
        assert cpu.dirty_log  # landings need the dirty log from the start
        assert rec.clock_ns() == 1000  # before the first exit: exit 0
        rec.on_exit(1, io_exit(ExitKind.IO_OUT, 0x3F8, b"A", rip=0x1001))
        assert rec.serial_input(1, 16) == b"hi"
        assert rec.serial_input(1, 16) == b""  # nothing typed: nothing logged
        read = io_exit(ExitKind.IO_IN, 0x3FD, rip=0x1002)
        rec.on_exit(2, read)  # a read is logged with its value, not here
        assert rec.read_value(2, read, b"\x60") == b"\x60"
        assert rec.wall_time() == 1.7e9
        assert rec.timer_due(2, 5000) == 5300
        assert rec.timer_due(2, 9000) is None
        rec.on_inject(2, 0x20)
        rec.on_irq_line(2, 4, True)
        assert rec.entropy(2, 2) == b"\x01\x02"
        assert rec.device_input(2, "console", 64) == b""
        assert rec.device_input(2, "console", 64) == b"typed"
        writer.close({"exits": 2})
    E = EventKind
    assert events(trace) == [
        (0, [E.CLOCK, 1000]),
        (1, [E.EXIT, ExitKind.IO_OUT, 0x3F8, 1, ord("A"), 0x1001]),
        (1, [E.SERIAL_RX, b"hi"]),
        (2, [E.EXIT, ExitKind.IO_IN, 0x3FD, 1, 0x60, 0x1002]),
        (2, [E.WALL, 1.7e9]),
        (2, [E.TIMER, 300]),  # how late the deadline was seen, not the clock itself
        (2, [E.INJECT, 0x20]),
        (2, [E.IRQ_LINE, 4, 1]),
        (2, [E.ENTROPY, b"\x01\x02"]),
        (2, [E.DEVICE_INPUT, "console", b"typed"]),
    ]


def test_a_forced_exit_is_logged_with_its_landing(tmp_path: Path) -> None:
    store = (2 * PAGE + 8, b"\xaa" * 8)
    cpu = FakeCpu(
        [Step(10, ExitKind.IO_OUT, 0x80, 1, b"\x01", writes=(store,)), Step(100, ExitKind.HLT)]
    )
    trace = tmp_path / "t.rrt"
    with TraceWriter(trace, {"test": "recorder"}) as writer:
        rec = Recorder(ScriptedLive(cpu), writer, cpu)
        cpu.write_memory(5 * PAGE, b"the loader's image")
        rec.booted()  # the loader's writes are not the guest's
        rec.on_exit(1, cpu.run())
        cpu.set_instruction_limit(60)  # a kick 50 instructions into the next interval
        kicked = cpu.run()
        assert kicked.kind is ExitKind.INTR
        regs, rip = cpu.get_regs(), kicked.rip
        rec.on_exit(2, kicked)
        # an interrupt injected for the next entry, and a kick before the guest took it
        rec.on_inject(2, 0x30)
        cpu.inject_interrupt(0x30)
        rec.on_exit(3, cpu.run())
        writer.close({"exits": 3})
    log = events(trace)
    assert [(i, ev[0]) for i, ev in log] == [
        (1, EventKind.EXIT), (2, EventKind.EXIT), (2, EventKind.LANDING),
        (2, EventKind.INJECT), (3, EventKind.EXIT), (3, EventKind.LANDING),
    ]  # fmt: skip
    assert log[1][1] == [EventKind.EXIT, ExitKind.INTR, 0, 0, 0, rip]
    _, regs_hash, rflags, mem, _portable, progressed, count = log[2][1]
    assert regs_hash == regs_fingerprint(regs)
    assert rflags == 0x202
    assert mem == memory_fingerprint(1 << 2, cpu.ram_page)  # page 2 only: not the loader's
    assert progressed is True
    assert count == 60  # this CPU counts exactly: replay can land by count
    _, _, _, mem2, _, progressed2, count2 = log[5][1]
    assert progressed2 is False  # the guest never ran: replay forges this exit
    assert count2 == 60
    assert mem2 == memory_fingerprint(0, cpu.ram_page)  # nothing written since the last one
    assert rec.forced_exits == 2


def test_a_halt_flushes_and_logs_the_moved_tsc(tmp_path: Path) -> None:
    """A recording killed while its guest waits keeps everything up to the wait."""
    cpu = FakeCpu([])
    live = ScriptedLive(cpu, idle_tsc=[0, 777], clock=[0])
    trace = tmp_path / "t.rrt"
    with TraceWriter(trace, {"test": "recorder"}) as writer:
        rec = Recorder(live, writer, cpu)
        rec.on_exit(1, io_exit(ExitKind.HLT, 0))
        rec.idle(None)  # waits for input: the TSC did not move, the chunk goes to disk
        assert writer.pending_bytes == 0
        with TraceReader(trace) as reader:  # while the recorder still runs
            assert reader.truncated
            assert [(i, list(ev)) for i, ev in reader.events()] == [
                (1, [EventKind.EXIT, ExitKind.HLT, 0, 1, 0, 0x1234])
            ]
        rec.idle(10**12)  # a timer far ahead; the TSC moved on while halted
        writer.close({"exits": 1})
    assert events(trace)[-1] == (1, [EventKind.TSC, 777])
