"""The replayer: a seam that answers from the trace and checks every exit against it.

Devices still run: their computed read values are compared with the recorded ones, and
the machine's own interrupt decisions with the recorded injections. Forced exits are
re-created by landing: a hardware breakpoint at the recorded RIP, and at each hit the
fingerprint of the state is compared until it matches (see ``fingerprint``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rrvmm.cpu.backend import GPR_NAMES, ExitKind, VcpuExit
from rrvmm.host.kicker import Kicker
from rrvmm.replay.events import EventKind
from rrvmm.replay.fingerprint import Landing, LandingProbe
from rrvmm.replay.landing import (
    HALTED_LANDING_POLL_NS,
    STUCK_POLL_NS,
    Halt,
    after_kick,
    forge_landing,
    run_to_count,
)
from rrvmm.replay.recorder import FORCED_EXITS, exit_event
from rrvmm.seam import Seam, StopRequest
from rrvmm.target import TargetDiverged

if TYPE_CHECKING:
    from rrvmm.cpu.backend import CpuBackend, InstructionCounting, KernelIrqchip, RecordableCpu

__all__ = ["Replayer", "ReplayDivergence", "TraceEnded", "ExitCheck"]

_READS = (ExitKind.IO_IN, ExitKind.MMIO_READ)
_EXIT_FIELDS = ("kind", "addr", "size", "value", "rip")
RECORDING_END = StopRequest("end of trace", 0)


class ReplayDivergence(TargetDiverged):
    """Replay left the recorded timeline; the message is the report."""

    def __init__(
        self,
        index: int,
        what: str,
        expected: object,
        actual: object,
        regs: dict[str, int] | None = None,
        last_match: int = 0,
    ) -> None:
        self.index = index
        self.what = what
        self.expected = expected
        self.actual = actual
        self.regs = regs or {}
        self.last_match = last_match
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return (
            f"replay diverged at exit {self.index}: {self.what}: expected {self.expected},"
            f" got {self.actual} (last matching exit {self.last_match})"
        )

    def report(self) -> str:
        lines = [self.one_line()]
        if self.regs:
            names = [n for n in GPR_NAMES if n in self.regs]
            for i in range(0, len(names), 4):
                lines.append(
                    "  " + "  ".join(f"{n:>6}={self.regs[n]:#018x}" for n in names[i : i + 4])
                )
        return "\n".join(lines)


class TraceEnded(Exception):
    """The trace has no more events: the replay reached the end of what was recorded."""


def _fmt_exit(ev: tuple | list) -> str:
    _, kind, addr, size, value, rip = ev
    v = value.hex() if isinstance(value, bytes) else f"{value:#x}"
    return f"{ExitKind(kind).name} addr={addr:#x} size={size} value={v} rip={rip:#x}"


@dataclass
class ExitCheck:
    """Called every ``every`` exits with (index, cpu); replay tests compare states."""

    every: int
    callback: Callable[[int, RecordableCpu], None]


@dataclass
class ReplayStats:
    landings: int = 0
    landing_hits: int = 0
    forged: int = 0
    exits: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Replayer(Seam):
    def __init__(
        self,
        events: Callable[[int], Iterator[tuple[int, Any]]],
        cpu: RecordableCpu,
        check: ExitCheck | None = None,
        exact_counts: bool = False,
        exact_flags: bool = True,
    ) -> None:
        """``events(k)`` iterates the trace's events from the first one at exit ``k``.

        ``exact_counts``: the trace was recorded on a backend that counts instructions
        exactly and ``cpu`` is one too, so forced exits are found by their count (the
        replay rig decides it: ``rrvmm.replay.rig.counts_exactly``).
        """
        self.counter: InstructionCounting | None = cpu.instruction_counter()
        self.kernel_irqchip: KernelIrqchip | None = cpu.kernel_irqchip()
        self.exact_counts = exact_counts and self.counter is not None
        # flags left undefined by some instructions differ between CPU models
        self.exact_flags = exact_flags
        self._source = events
        self._events = events(0)
        self._ahead: deque[tuple[int, Any]] = deque()  # looked at, not yet consumed
        # cursor: the exit index of the last consumed event, and how many with that index
        self._last_idx = 0
        self._last_count = 0
        self.cpu = cpu
        self.index = 0
        self.last_match = 0
        self.check = check
        self.stats = ReplayStats()
        self._pending_read: list | None = None
        self.progress: Callable[[int], None] | None = None
        self._poller: Kicker | None = None  # kicks a vCPU that may be halted in KVM
        self.probe = LandingProbe(cpu, exact_flags, self.exact_counts)
        cpu.enable_dirty_log()

    def booted(self) -> None:
        # landings hash the pages the *guest* wrote: forget the loader's writes, which
        # some backends log (the software one) and others do not (KVM)
        self.cpu.dirty_bitmap()

    # --- the event cursor ---
    def _peek(self, n: int = 0) -> tuple[int, Any] | None:
        """The n-th event not yet consumed, or None past the end of the trace."""
        ahead = self._ahead
        while len(ahead) <= n:
            nxt = next(self._events, None)
            if nxt is None:
                return None
            ahead.append(nxt)
        return ahead[n]

    def _consume(self) -> None:
        idx = self._ahead.popleft()[0]
        if idx == self._last_idx:
            self._last_count += 1
        else:
            self._last_idx, self._last_count = idx, 1

    def cursor(self) -> dict[str, Any]:
        """Where replay stands in the trace and in its checks (for checkpoints)."""
        return {
            "last_idx": self._last_idx,
            "last_count": self._last_count,
            "index": self.index,
            "last_match": self.last_match,
        }

    def set_cursor(self, cur: dict[str, Any]) -> None:
        self._last_idx, self._last_count = cur["last_idx"], cur["last_count"]
        self.index, self.last_match = cur["index"], cur["last_match"]
        self._events = self._source(self._last_idx)
        self._ahead.clear()
        skip = self._last_count
        while skip:
            ev = next(self._events, None)
            if ev is None or ev[0] != self._last_idx:
                raise RuntimeError("trace cursor does not match the trace")
            skip -= 1

    def next_exit(self) -> tuple[int, list] | None:
        """The next recorded EXIT event (index, payload), or None at the end of the trace."""
        i = 0
        while True:
            ev = self._peek(i)
            if ev is None:
                return None
            if ev[1][0] == EventKind.EXIT:
                return ev
            i += 1

    def next_landing(self) -> Landing | None:
        """Where the next exit must happen, if it is a forced one."""
        ev = self._peek()
        if ev is None or ev[1][0] != EventKind.EXIT or ExitKind(ev[1][1]) not in FORCED_EXITS:
            return None
        landing = self._landing_event()
        if landing is None:
            return None
        return Landing.from_events(ev[1], landing)

    def _expect(self, kind: EventKind, what: str) -> Any:
        ev = self._peek()
        if ev is None:
            raise TraceEnded()
        idx, payload = ev
        if idx != self.index or payload[0] != kind:
            raise self._diverged(what, self._describe(ev), f"{kind.name} at exit {self.index}")
        self._consume()
        return payload

    def _next_is(self, kind: EventKind) -> Any | None:
        ev = self._peek()
        if ev is not None and ev[0] == self.index and ev[1][0] == kind:
            self._consume()
            return ev[1]
        return None

    def _describe(self, ev: tuple[int, Any]) -> str:
        idx, payload = ev
        kind = EventKind(payload[0])
        if kind == EventKind.EXIT:
            return f"exit {idx}: {_fmt_exit(payload)}"
        return f"{kind.name} {list(payload[1:])} at exit {idx}"

    def _diverged(self, what: str, expected: object, actual: object) -> ReplayDivergence:
        try:
            regs = self.cpu.get_regs()
        except Exception:  # noqa: BLE001 - the report must not hide the divergence
            regs = {}
        return ReplayDivergence(self.index, what, expected, actual, regs, self.last_match)

    @property
    def at_end(self) -> bool:
        return self._peek() is None

    # --- inputs, from the trace ---
    def clock_ns(self) -> int:
        return self._expect(EventKind.CLOCK, "device read the clock")[1]

    def wall_time(self) -> float:
        return self._expect(EventKind.WALL, "RTC read the wall clock")[1]

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        ev = self._next_is(EventKind.TIMER)
        if ev is None:
            return None
        if deadline_ns is None:
            raise self._diverged("timer", "a device deadline", "no deadline armed")
        return deadline_ns + ev[1]

    def serial_input(self, index: int, room: int) -> bytes:
        ev = self._next_is(EventKind.SERIAL_RX)
        if ev is None:
            return b""
        if len(ev[1]) > room:
            raise self._diverged("UART receive room", f">= {len(ev[1])} bytes", room)
        return ev[1]

    def device_input(self, index: int, device: str, room: int) -> bytes:
        ev = self._peek()
        if ev is None or ev[0] != self.index or ev[1][0] != EventKind.DEVICE_INPUT:
            return b""
        if ev[1][1] != device:
            return b""  # for another device, asked next
        self._consume()
        data = ev[1][2]
        if device == "console" and len(data) > room:
            raise self._diverged("virtio-console receive room", f">= {len(data)} bytes", room)
        return data

    def entropy(self, index: int, size: int) -> bytes:
        data = self._expect(EventKind.ENTROPY, "virtio entropy request")[1]
        if len(data) != size:
            raise self._diverged("virtio entropy request", f"{len(data)} bytes", f"{size} bytes")
        return data

    def read_value(self, index: int, exit: VcpuExit, value: bytes) -> bytes:
        rec = self._expect_exit(exit, value)
        recorded = rec[4]
        data = (
            recorded.to_bytes(exit.size * exit.count, "little")
            if isinstance(recorded, int)
            else recorded
        )
        if data != value:
            raise self._diverged(
                f"value read from {ExitKind(rec[1]).name} {rec[2]:#x}",
                f"{data.hex()} (recorded)",
                f"{value.hex()} (device model)",
            )
        self.last_match = index
        return data

    # --- the timeline ---
    def _expect_exit(self, exit: VcpuExit, value: bytes) -> list:
        ev = self._peek()
        if ev is None:
            raise TraceEnded()
        idx, payload = ev
        actual = exit_event(exit, value)
        if idx != self.index or payload[0] != EventKind.EXIT:
            raise self._diverged(
                "exit", self._describe(ev), f"exit {self.index}: {_fmt_exit(actual)}"
            )
        self._consume()
        same = (
            payload[1] == actual[1]
            and payload[2] == actual[2]
            and payload[3] == actual[3]
            and payload[5] == actual[5]
            and (exit.kind in _READS or payload[4] == actual[4])
        )
        if not same:
            raise self._diverged("exit", _fmt_exit(payload), _fmt_exit(actual))
        return payload

    def on_exit(self, index: int, exit: VcpuExit) -> None:
        self.index = index
        self.stats.exits = index
        if exit.kind not in _READS:
            self._expect_exit(exit, exit.data)
            if exit.kind in FORCED_EXITS:
                self._expect(EventKind.LANDING, "forced exit landing")
            self.last_match = index
        if self.progress is not None and not index & 0xFFF:
            self.progress(index)
        if self.check is not None and index % self.check.every == 0:
            self.check.callback(index, self.cpu)

    def on_inject(self, index: int, vector: int) -> None:
        ev = self._next_is(EventKind.INJECT)
        if ev is None and self.at_end:
            raise TraceEnded()  # a cut trace: what came next was not written
        if ev is None or ev[1] != vector:
            raise self._diverged(
                "interrupt injection",
                f"vector {ev[1]:#x}" if ev else "no injection",
                f"vector {vector:#x}",
            )

    def on_irq_line(self, index: int, line: int, level: bool) -> None:
        ev = self._next_is(EventKind.IRQ_LINE)
        if ev is None and self.at_end:
            raise TraceEnded()
        if ev is None or (ev[1], bool(ev[2])) != (line, level):
            raise self._diverged(
                "interrupt line",
                f"IRQ{ev[1]} {'high' if ev[2] else 'low'}" if ev else "no line change",
                f"IRQ{line} {'high' if level else 'low'}",
            )

    def idle(self, deadline_ns: int | None) -> None:
        # the recorder may have idled more than once (a wake-up with nothing due): each
        # time the TSC moved on is one event, the last one holds
        while (tsc := self._next_is(EventKind.TSC)) is not None:
            if self.counter is not None:  # a virtual TSC; KVM's runs on its own
                self.counter.tsc_offset = tsc[1]
        ev = self._peek()
        if ev is None:
            raise TraceEnded()
        if ev[0] != self.index or ev[1][0] not in (
            EventKind.TIMER, EventKind.SERIAL_RX, EventKind.DEVICE_INPUT
        ):  # fmt: skip
            raise self._diverged("wake-up of a halted guest", self._describe(ev), "nothing")

    def input_possible(self) -> bool:
        return not self.at_end

    def stop_requested(self) -> StopRequest | None:
        """A recording stopped by the user (escape key, signal) ends between two exits,
        before any input of the next one is taken: where replay runs out of events at
        that point, the recording stopped there, and replay must not go on to take
        inputs or inject an interrupt the recording never did."""
        return RECORDING_END if self.at_end else None

    # --- running the CPU ---
    def run(self, cpu: CpuBackend) -> VcpuExit:
        cpu.request_interrupt_window(False)
        ev = self._peek()
        if ev is None:
            raise TraceEnded()
        idx, payload = ev
        if payload[0] == EventKind.EXIT and ExitKind(payload[1]) in FORCED_EXITS:
            return self._land(self.cpu, ExitKind(payload[1]), payload[5])  # that same CPU
        if self.kernel_irqchip is not None:
            return self._run_watching_halt(cpu, self.kernel_irqchip)
        return cpu.run()

    def _land(self, cpu: RecordableCpu, kind: ExitKind, rip: int) -> VcpuExit:
        """Run to the recorded forced exit: breakpoint at its RIP, match the fingerprint."""
        target = self.next_landing()
        if target is None:
            raise TraceEnded()
        self.stats.landings += 1
        probe = self.probe
        if not target.progressed:
            self.stats.forged += 1
            return forge_landing(cpu, probe, target)
        if probe.counted(target) and self.counter is not None:
            assert target.instructions is not None  # counted() checked it
            return self._land_by_count(cpu, self.counter, kind, target.instructions)
        chip = self.kernel_irqchip
        if target.halted and chip is not None:
            return self._land_halted(cpu, chip, target)
        if probe.matches(target):  # the kick came before the guest ran an instruction
            self.stats.forged += 1
            return forge_landing(cpu, probe, target)
        at_hlt: bool | None = None
        cpu.set_debug([rip])
        try:
            while True:
                ex = cpu.run() if chip is None else self._run_watching_halt(cpu, chip)
                if ex.kind is not ExitKind.DEBUG or ex.rip != rip:
                    return ex  # a real exit first: the verification reports it
                self.stats.landing_hits += 1
                if probe.matches(target):
                    probe.passed()
                    ex.kind, ex.addr, ex.size, ex.data, ex.detail = kind, 0, 0, b"", ""
                    return ex
                if at_hlt is None:  # the same instruction at every hit
                    at_hlt = chip is not None and chip.at_hlt()
                if at_hlt and chip is not None:
                    chip.halt()  # a single-stepped HLT would block inside KVM
                else:
                    cpu.set_debug([], single_step=True)
                    ex = cpu.run() if chip is None else self._run_watching_halt(cpu, chip)
                    if ex.kind is not ExitKind.DEBUG:
                        return ex
                cpu.set_debug([rip])
        finally:
            cpu.set_debug([])

    def _run_watching_halt(self, cpu: CpuBackend, chip: KernelIrqchip) -> VcpuExit:
        """Kernel irqchip: run, but a guest halted for good is a divergence, not a hang."""
        if self._poller is None:
            self.poll_vcpu(cpu, STUCK_POLL_NS)
        while True:
            ex = cpu.run()
            if ex.kind is not ExitKind.INTR:
                return ex
            if after_kick(chip, self.probe, None) is Halt.STUCK:
                raise self._diverged(
                    "running guest", "a forced exit while running", f"halted at RIP {ex.rip:#x}"
                )

    def _land_halted(self, cpu: CpuBackend, chip: KernelIrqchip, target: Landing) -> VcpuExit:
        """Kernel irqchip: run until the vCPU halts in the recorded HLT.

        A halted vCPU sits inside KVM_RUN and nothing but rrvmm can wake it, so the guest
        is kicked (from ``HALTED_LANDING_POLL_NS`` on, backing off) until it is found halted;
        kicks are invisible to it. Halted in another state is a divergence: it would wait
        there for ever.
        """
        self.poll_vcpu(cpu, HALTED_LANDING_POLL_NS)
        while True:
            ex = cpu.run()
            if ex.kind is not ExitKind.INTR:
                return ex  # a real exit first: the verification reports it
            halt = after_kick(chip, self.probe, target)
            if halt is Halt.RUNNING:
                continue
            self.stats.landing_hits += 1
            if halt is Halt.LANDED:
                self.probe.passed()
                ex.kind = target.kind
                return ex
            raise self._diverged(
                "halted guest", f"halted at RIP {target.rip:#x}",
                f"halted at RIP {ex.rip:#x} in another state",
            )  # fmt: skip

    def poll_vcpu(self, cpu: CpuBackend, first_ns: int) -> None:
        """Kick the vCPU ``first_ns`` from now, then again and again with a growing delay
        (the kicker's retry), so that a vCPU halted inside KVM is always looked at."""
        if self._poller is None:
            self._poller = Kicker(cpu.kick)
        self._poller.arm(time.monotonic_ns() + first_ns)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def _land_by_count(
        self, cpu: CpuBackend, counter: InstructionCounting, kind: ExitKind, count: int
    ) -> VcpuExit:
        """Run exactly to instruction ``count``: an exact CPU needs no search."""
        ex = run_to_count(cpu, counter, count)
        if ex.kind is ExitKind.INTR and counter.instructions == count:
            self.probe.passed()  # keep the dirty log in step with the recorder's
            ex.kind = kind
        return ex  # anything else is reported by the exit verification

    def _landing_event(self) -> list | None:
        """The LANDING event that must follow the pending EXIT event (not consumed)."""
        landing = self._peek(1)
        if landing is None or landing[1][0] != EventKind.LANDING:
            return None
        return landing[1]
