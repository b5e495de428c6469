"""The seam's live side: answers from the host (clock, wall clock, typed bytes, UDP ports).

``LiveSeam`` reads the host's monotonic clock; ``InstructionClockSeam`` makes guest time
the instruction count on a CPU that counts exactly. The recorder wraps either one.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from rrvmm.cpu.guest_clock import instructions_to_ns, instructions_until, ns_to_tsc
from rrvmm.host.kicker import Kicker
from rrvmm.seam import Seam

if TYPE_CHECKING:
    from rrvmm.cpu.backend import CpuBackend, InstructionCounting
    from rrvmm.host.terminal import SerialHost
    from rrvmm.host.udp import UdpPort
    from rrvmm.seam import StopRequest

__all__ = ["LiveSeam", "InstructionClockSeam"]


class LiveSeam(Seam):
    """Inputs from the host: monotonic clock, wall clock, the serial host's input queue."""

    def __init__(self, serial: SerialHost | None, ports: dict[str, UdpPort] | None = None) -> None:
        self._t0 = time.monotonic_ns()
        self._serial = serial
        self._ports = ports or {}
        self._kicker: Kicker | None = None

    def attach(self, cpu: CpuBackend) -> None:
        """Start kicking ``cpu`` at deadlines and on serial input."""
        self._kicker = Kicker(cpu.kick)
        if self._serial is not None:
            self._serial.start(cpu.kick)
        self._start_ports(cpu)

    def _start_ports(self, cpu: CpuBackend) -> None:
        wake = self._serial.notify_input if self._serial is not None else cpu.kick
        for port in self._ports.values():
            port.start(wake)

    def detach(self) -> None:
        if self._kicker is not None:
            self._kicker.close()
            self._kicker = None

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        if self._kicker is not None:
            at = None if deadline_ns is None else deadline_ns + self._t0
            if poll_ns is not None:
                poll_at = time.monotonic_ns() + poll_ns
                at = poll_at if at is None else min(at, poll_at)
            self._kicker.arm(at)

    def stop_requested(self) -> StopRequest | None:
        return None if self._serial is None else self._serial.stop

    def clock_ns(self) -> int:
        return time.monotonic_ns() - self._t0

    def wall_time(self) -> float:
        return time.time()

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        if deadline_ns is None:
            return None
        now = time.monotonic_ns() - self._t0
        return now if now >= deadline_ns else None

    def serial_input(self, index: int, room: int) -> bytes:
        s = self._serial
        if s is None or room <= 0 or not s.has_input():
            return b""
        return s.take(room)

    def device_input(self, index: int, device: str, room: int) -> bytes:
        port = self._ports.get(device)
        if port is None or not port.has_input():
            return b""
        return port.take_frame() if device == "net" else port.take(room)

    def entropy(self, index: int, size: int) -> bytes:
        return os.urandom(size)

    def idle(self, deadline_ns: int | None) -> None:
        timeout_s = None
        if deadline_ns is not None:
            timeout_s = max(0.0, (deadline_ns - (time.monotonic_ns() - self._t0)) / 1e9)
        if self._serial is not None:
            self._serial.wait(timeout_s)
        elif timeout_s is not None:
            time.sleep(timeout_s)

    def input_possible(self) -> bool:
        """More input may still come (queued input the guest cannot take does not count)."""
        s = self._serial
        return bool(self._ports) or (s is not None and not s.input_closed)


class InstructionClockSeam(LiveSeam):
    """Live inputs for a CPU that counts instructions: guest time is instruction time.

    Guest time is ``instructions_to_ns(instructions)`` (``cpu.guest_clock``: one
    instruction is one nanosecond) plus the time the guest spent halted, and every clock
    the guest reads comes from it: the PIT through ``clock_ns``, the TSC through the
    backend (the same mapping, plus an offset that moves on with each halt), the RTC
    through ``wall_time`` (the host's wall clock at the start plus guest time). Device
    deadlines therefore fall at exact instruction counts: the CPU is told to stop there
    instead of being kicked by a host timer, and a timer interrupt lands at the same
    instruction in every run. A VM exit costs no guest time, so the number of exits never
    shows in the guest's clocks. While the guest halts, guest time follows the host clock
    (it sleeps until the deadline, or until input arrives), so interactive guests still
    wait for their user.
    """

    def __init__(
        self,
        serial: SerialHost | None,
        counter: InstructionCounting,
        ports: dict[str, UdpPort] | None = None,
    ) -> None:
        super().__init__(serial, ports)
        self._cpu = counter
        self._idle_ns = 0  # guest time spent halted
        self._wall0 = time.time()  # the RTC's time of day at guest time 0

    def attach(self, cpu: CpuBackend) -> None:
        if self._serial is not None:
            self._serial.start(cpu.kick)  # input still interrupts a long computation
        self._start_ports(cpu)

    def clock_ns(self) -> int:
        return instructions_to_ns(self._cpu.instructions) + self._idle_ns

    def wall_time(self) -> float:
        return self._wall0 + self.clock_ns() / 1e9

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        if deadline_ns is None:
            return None
        now = self.clock_ns()
        return now if now >= deadline_ns else None

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        limit = None
        if deadline_ns is not None:
            limit = self._cpu.instructions + instructions_until(deadline_ns - self.clock_ns())
        self._cpu.set_instruction_limit(limit)

    def idle(self, deadline_ns: int | None) -> None:
        start = time.monotonic_ns()
        timeout_s = None
        if deadline_ns is not None:
            timeout_s = max(0, deadline_ns - self.clock_ns()) / 1e9
        if self._serial is not None:
            self._serial.wait(timeout_s)
        elif timeout_s is not None:
            time.sleep(timeout_s)
        elapsed = time.monotonic_ns() - start
        if deadline_ns is not None:
            elapsed = min(elapsed, max(0, deadline_ns - self.clock_ns()))
            if not (self._serial is not None and self._serial.has_input()):
                # woken by the deadline: land on it exactly, however the host slept
                elapsed = max(0, deadline_ns - self.clock_ns())
        before = self._idle_ns
        self._idle_ns += elapsed
        self._cpu.tsc_offset += ns_to_tsc(self._idle_ns) - ns_to_tsc(before)  # the TSC keeps pace
