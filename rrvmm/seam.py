"""The one seam through which nondeterministic inputs enter the guest.

The machine asks the seam for every value that is not a function of guest state: the clock
the PIT counts against, the wall clock the RTC shows, the bytes typed into the serial port,
and whether a timer deadline has passed. ``LiveSeam`` (``rrvmm.host.live_seam``) answers
from the host. The recorder wraps it and logs each answer with the exit index it belongs to;
the replayer answers from the trace instead, so the devices compute the same values again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rrvmm.cpu.backend import CpuBackend, VcpuExit

__all__ = ["Seam", "StopRequest"]


@dataclass(frozen=True)
class StopRequest:
    """Why a run must end at the next point between exits, and the status it ends with."""

    reason: str  # the RunResult reason, e.g. "stopped by the user (SIGINT)"
    status: int


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

    def stop_requested(self) -> StopRequest | None:
        """Whether the run ends here, between two exits (the user's escape key or a signal;
        in replay, the recording's own end)."""
        return None

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
