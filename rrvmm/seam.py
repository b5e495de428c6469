"""The one seam through which nondeterministic inputs enter the guest.

The machine asks the seam for every value that is not a function of guest state: the clock
the PIT counts against, the wall clock the RTC shows, the bytes typed into the serial port,
and whether a timer deadline has passed. ``LiveSeam`` answers from the host. The recorder
wraps it and logs each answer with the exit index it belongs to; the replayer answers from
the trace instead, so the devices compute the same values again.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from rrvmm.kicker import Kicker

if TYPE_CHECKING:
    from rrvmm.hostio import SerialHost
    from rrvmm.hostnet import UdpPort
    from rrvmm.kvm.backend import CpuBackend, VcpuExit

__all__ = ["Seam", "LiveSeam"]


class Seam:
    """Base: the hooks the machine calls. Subclasses answer or check them."""

    def clock_ns(self) -> int:
        """Guest time for the PIT, nanoseconds since power-on."""
        raise NotImplementedError

    def wall_time(self) -> float:
        """Seconds since the epoch, for the RTC."""
        raise NotImplementedError

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        """At exit ``index``: the clock value if the device deadline has passed, else None."""
        raise NotImplementedError

    def serial_input(self, index: int, room: int) -> bytes:
        """At exit ``index``: up to ``room`` bytes of host input for the UART."""
        raise NotImplementedError

    def read_value(self, index: int, exit: VcpuExit, value: bytes) -> bytes:
        """The bytes the guest gets for an IN/MMIO read the devices answered with ``value``."""
        return value

    def device_input(self, index: int, device: str, room: int) -> bytes:
        """At exit ``index``: host input for virtio ``device`` ('console': up to ``room``
        bytes; 'net': one frame), or b''."""
        return b""

    def entropy(self, index: int, size: int) -> bytes:
        """At exit ``index``: ``size`` random bytes for the virtio entropy device."""
        raise NotImplementedError

    def booted(self) -> None:
        """The loader has written the guest images; the guest has not run yet."""

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        """Called before each entry with the next device deadline (guest ns).

        ``poll_ns`` (kernel irqchip): a live seam kicks the vCPU this soon even without a
        deadline, as HLT does not exit and a held-back interrupt edge waits for an exit.
        """

    def run(self, cpu: CpuBackend) -> VcpuExit:
        """Enter the guest until the next exit; replay re-creates forced exits here."""
        return cpu.run()

    def stop_requested(self) -> bool:
        """The user asked to stop (escape key)."""
        return False

    def on_exit(self, index: int, exit: VcpuExit) -> None:
        """Called for every exit, before it is handled."""

    def on_inject(self, index: int, vector: int) -> None:
        """Called when the machine injects ``vector`` before resuming after exit ``index``."""

    def on_irq_line(self, index: int, line: int, level: bool) -> None:
        """Kernel irqchip: the machine set input ``line`` of KVM's PIC after exit ``index``."""

    def idle(self, deadline_ns: int | None) -> None:
        """The guest is halted; block until ``deadline_ns`` (guest ns) or input may be due."""

    def input_possible(self) -> bool:
        """Whether serial input may still arrive (a halted guest may wait for it)."""
        return False


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

    def stop_requested(self) -> bool:
        return self._serial is not None and self._serial.quit_requested

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

    One instruction is one nanosecond of guest time (the software backend's TSC runs at
    one tick per instruction too), so device deadlines fall at exact instruction counts:
    the CPU is told to stop there instead of being kicked by a host timer, and a timer
    interrupt lands at the same instruction in every run. Each VM exit (a port or MMIO
    access) costs ``EXIT_NS`` more, as an ISA port access takes about a microsecond on a PC:
    guests that poll the PIT see it move. While the guest halts, guest time follows the host
    clock (it sleeps until the deadline, or until input arrives), so interactive guests
    still wait for their user.
    """

    EXIT_NS = 1000

    def __init__(
        self, serial: SerialHost | None, cpu: CpuBackend, ports: dict[str, UdpPort] | None = None
    ) -> None:
        super().__init__(serial, ports)
        self._cpu = cpu
        self._idle_ns = 0  # guest time spent halted
        self._exits = 0  # exits so far (from the index the machine passes)

    def attach(self, cpu: CpuBackend) -> None:
        if self._serial is not None:
            self._serial.start(cpu.kick)  # input still interrupts a long computation
        self._start_ports(cpu)

    def clock_ns(self) -> int:
        extra = self._idle_ns + self._exits * self.EXIT_NS
        return self._cpu.instructions + extra  # type: ignore[attr-defined]

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        self._exits = index
        if deadline_ns is None:
            return None
        now = self.clock_ns()
        return now if now >= deadline_ns else None

    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        if deadline_ns is None:
            limit = None
        else:
            now = self.clock_ns()
            limit = self._cpu.instructions + max(1, deadline_ns - now)  # type: ignore[attr-defined]
        self._cpu.set_instruction_limit(limit)  # type: ignore[attr-defined]

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
        self._idle_ns += elapsed
        cpu = self._cpu
        cpu.tsc_offset += elapsed  # type: ignore[attr-defined]  # the TSC keeps pace
