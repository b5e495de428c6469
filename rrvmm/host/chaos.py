"""Chaos recording: the live seam's answers, perturbed within what real hardware does.

A race between an interrupt handler and the code it interrupts shows only when an
interrupt lands inside a narrow window. A recording on an idle host lands timer
interrupts at nearly the same points every run (on the software CPU at exactly the same
instruction), so a one-in-fifty bug may never show. ``ChaosSeam`` wraps the live seam and
shakes what a PC's timing is allowed to vary anyway:

- **timer interrupt latency**: a deadline is answered late by a random, bounded amount
  (an SMI, a busy bus, a host that descheduled the vCPU), now and then by a longer stall;
  while it is late the PIT counter has already reloaded, so the guest sees a fresh period
  with the previous tick still undelivered, as on real hardware;
- **forced-exit placement**: the host kick for a deadline sometimes comes early, an exit
  at a random point where nothing is due (on the software CPU each exit also costs guest
  time, so later landings shift);
- **clock jitter**: clock readings run ahead by a bounded random amount, never backwards;
- **host input**: serial bytes and virtio console/network input are sometimes held back
  for a few exits, so they arrive at other points of the guest's execution.

Only the live side is perturbed: the recorder logs whatever the seam answered, and replay
answers from the trace, so a chaos recording replays exactly whatever the dice said. With
the same seed on the software CPU (whose live inputs are a function of the instruction
count) the same recording comes out again. virtio-blk completions are signalled
synchronously by the device model and are not perturbed (that would need a new event).
Multi-vCPU switch quanta will join here once there is more than one vCPU.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rrvmm.seam import Seam

if TYPE_CHECKING:
    from rrvmm.cpu.backend import CpuBackend, VcpuExit
    from rrvmm.host.live_seam import LiveSeam

__all__ = ["ChaosSettings", "ChaosSeam", "chaos_text", "new_seed", "parse_seed"]

_EARLY_AHEAD_NS = 50_000  # an early kick comes at least this far ahead of now


def new_seed() -> int:
    """A fresh 63-bit seed from the OS."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def parse_seed(text: str) -> int:
    """A seed as the user typed it (decimal or 0x hex); ValueError when it is neither."""
    value = int(text, 0)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"seed {text} out of range (0 to 2**64-1)")
    return value


@dataclass(frozen=True)
class ChaosSettings:
    """What the dice may do; stored in the trace header with the seed.

    Bounds are guest nanoseconds. Latencies up to a millisecond are what SMIs and busy
    hosts give real PCs; the defaults stay well inside that.
    """

    seed: int
    timer_late_p: float = 0.3  # share of timer deadlines answered late
    timer_late_max_ns: int = 400_000  # how late, uniformly up to
    timer_stall_p: float = 0.02  # share of deadlines held for a long stall
    timer_stall_max_ns: int = 2_000_000
    early_kick_p: float = 0.1  # share of deadlines kicked early (an exit where nothing is due)
    early_kick_max_ns: int = 200_000
    clock_jitter_max_ns: int = 20_000  # clock readings run ahead by up to this
    input_hold_p: float = 0.3  # chance that waiting host input is held back at an exit

    def header(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChaosCounts:
    """How often each perturbation happened (the trace footer carries these)."""

    timers_late: int = 0
    timers_stalled: int = 0
    early_kicks: int = 0
    clock_jitters: int = 0
    inputs_held: int = 0


class ChaosSeam(Seam):
    """A live seam whose answers are shaken by ``settings``; wraps ``LiveSeam`` or
    ``InstructionClockSeam`` and otherwise passes everything through."""

    def __init__(self, live: LiveSeam, settings: ChaosSettings) -> None:
        self.live = live
        self.settings = settings
        self.counts = ChaosCounts()
        self._rng = random.Random(settings.seed)
        self._deadline: int | None = None  # the device deadline the delays below are for
        self._delay = 0  # extra latency for that deadline
        self._early: int | None = None  # an early kick for it, until it has been used
        self._last_clock = 0

    # --- the perturbed answers ---
    def _effective(self, deadline_ns: int | None) -> int | None:
        """The device deadline plus its drawn latency; a new deadline draws anew."""
        if deadline_ns is None:
            return None
        if deadline_ns != self._deadline:
            self._deadline = deadline_ns
            s, r = self.settings, self._rng
            roll = r.random()
            if roll < s.timer_stall_p:
                self._delay = r.randrange(s.timer_late_max_ns, s.timer_stall_max_ns + 1)
                self.counts.timers_stalled += 1
            elif roll < s.timer_stall_p + s.timer_late_p:
                self._delay = r.randrange(0, s.timer_late_max_ns + 1)
                self.counts.timers_late += 1
            else:
                self._delay = 0
            self._early = None
            if r.random() < s.early_kick_p:
                self._early = r.randrange(1, s.early_kick_max_ns + 1)
        return deadline_ns + self._delay

    def _monotonic(self, value: int) -> int:
        value = max(value, self._last_clock)
        self._last_clock = value
        return value

    def clock_ns(self) -> int:
        jitter = self._rng.randrange(0, self.settings.clock_jitter_max_ns + 1)
        if jitter:
            self.counts.clock_jitters += 1
        return self._monotonic(self.live.clock_ns() + jitter)

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        v = self.live.timer_due(index, self._effective(deadline_ns))
        return None if v is None else self._monotonic(v)

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        at = self._effective(deadline_ns)
        if at is not None and self._early is not None:
            # never in the past: a kick that fires at once would exit before the guest ran
            early = max(at - self._early, self.live.clock_ns() + _EARLY_AHEAD_NS)
            self._early = None  # once: after that exit the kick goes to the real deadline
            if early < at:
                at = early
                self.counts.early_kicks += 1
        self.live.entering_guest(at, poll_ns)

    def idle(self, deadline_ns: int | None) -> None:
        self.live.idle(self._effective(deadline_ns))

    def _hold(self) -> bool:
        if self._rng.random() < self.settings.input_hold_p:
            self.counts.inputs_held += 1
            return True
        return False

    def serial_input(self, index: int, room: int) -> bytes:
        if room > 0 and self._pending_serial() and self._hold():
            return b""
        return self.live.serial_input(index, room)

    def _pending_serial(self) -> bool:
        serial = getattr(self.live, "_serial", None)
        return serial is not None and serial.has_input()

    def device_input(self, index: int, device: str, room: int) -> bytes:
        port = getattr(self.live, "_ports", {}).get(device)
        if port is not None and port.has_input() and self._hold():
            return b""
        return self.live.device_input(index, device, room)

    # --- pass-through ---
    def attach(self, cpu: CpuBackend) -> None:
        self.live.attach(cpu)

    def detach(self) -> None:
        self.live.detach()

    def wall_time(self) -> float:
        return self.live.wall_time()

    def read_value(self, index: int, exit: VcpuExit, value: bytes) -> bytes:
        return self.live.read_value(index, exit, value)

    def entropy(self, index: int, size: int) -> bytes:
        return self.live.entropy(index, size)

    def booted(self) -> None:
        self.live.booted()

    def stop_requested(self) -> bool:
        return self.live.stop_requested()

    def input_possible(self) -> bool:
        return self.live.input_possible()

    def footer(self) -> dict[str, int]:
        return asdict(self.counts)


def chaos_text(chaos: dict[str, Any]) -> str:
    """One line for `rrvmm trace info`: the seed and what the dice did."""
    counts = [
        f"{chaos[k]} {what}"
        for k, what in (
            ("timers_late", "timers late"), ("timers_stalled", "stalled"),
            ("early_kicks", "early kicks"), ("clock_jitters", "clock readings jittered"),
            ("inputs_held", "inputs held"),
        )
        if k in chaos
    ]  # fmt: skip
    late = f"timers up to {chaos.get('timer_late_max_ns', 0) / 1000:.0f} us late"
    return f"seed {chaos.get('seed')} ({late}): " + (", ".join(counts) or "no footer")
