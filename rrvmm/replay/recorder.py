"""The recorder: a live seam that writes every answer it gives into the trace.

It sits between the machine and ``LiveSeam``: each input (clock, wall time, timer, serial
bytes, read values) is logged with the current exit index before the guest sees it, every
exit is logged for verification, and forced exits (kicks, interrupt windows) get a
fingerprint so replay can find the same instruction again.

What a kill -9 can lose is the open chunk: it is flushed by size, when the guest halts,
at the first exit half a second after the last flush, and by a flusher thread while the
guest runs without exits (the vCPU thread hands it the writer only for the time it is in
``cpu.run()``), so a killed recording replays up to about a second before the kill.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from rrvmm.cpu.backend import ExitKind, VcpuExit
from rrvmm.host.live_seam import LiveSeam
from rrvmm.replay.events import EventKind
from rrvmm.replay.fingerprint import landing_payload
from rrvmm.seam import Seam, StopRequest

if TYPE_CHECKING:
    from rrvmm.cpu.backend import CpuBackend, RecordableCpu, VcpuExit
    from rrvmm.replay.container import TraceWriter

__all__ = ["Recorder", "exit_event", "FORCED_EXITS"]

FORCED_EXITS = (ExitKind.INTR, ExitKind.IRQ_WINDOW)
_FLUSH_INTERVAL_S = 0.2  # a halted guest: flush if the last flush is this old
_LONG_WAIT_NS = 50_000_000
# A running guest: the first exit this long after the last flush puts the open chunk on
# disk; while the guest runs without exits, the flusher thread does it as often. A guest
# is never kicked out for a flush: forced exits cost replay a breakpoint search on KVM
# (a compute loop: ~11,000 hits and ~7 s of replay per landing, measured), and a span
# without exits has no inputs to lose. So kill -9 loses at most the last ~0.5-1 s.
_FLUSH_EVERY_S = 0.5
_READS = (ExitKind.IO_IN, ExitKind.MMIO_READ)
_EXIT = int(EventKind.EXIT)


def exit_event(ex: VcpuExit, data: bytes) -> list:
    """The EXIT event payload for an exit; ``data`` is the written or read bytes."""
    if ex.count == 1 and len(data) <= 8:
        value: int | bytes = int.from_bytes(data, "little")
    else:
        value = data
    return [_EXIT, int(ex.kind), ex.addr, ex.size, value, ex.rip]


class Recorder(Seam):
    def __init__(self, live: LiveSeam, writer: TraceWriter, cpu: RecordableCpu) -> None:
        self.live = live
        self.writer = writer
        self.cpu = cpu
        self.counter = cpu.instruction_counter()  # counts go into landings, if it has them
        self.kernel_irqchip = cpu.kernel_irqchip()
        self.index = 0
        self._injected_before_entry = False
        cpu.enable_dirty_log()
        self.forced_exits = 0
        self._last_flush = time.monotonic()
        # held by the vCPU thread except while the guest runs (``run``): then, and only
        # then, the flusher thread may write the open chunk
        self._writer_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stopping = threading.Event()

    def attach(self) -> None:
        """Start the flusher (call from the vCPU thread, before the machine runs)."""
        self._writer_lock.acquire()
        self._flusher = threading.Thread(target=self._flush_loop, name="trace-flush", daemon=True)
        self._flusher.start()

    def detach(self) -> None:
        if self._flusher is None:
            return
        self._stopping.set()
        self._writer_lock.release()
        self._flusher.join(timeout=5)
        self._flusher = None

    def _flush_loop(self) -> None:
        while not self._stopping.wait(_FLUSH_EVERY_S / 2):
            if not self._writer_lock.acquire(blocking=False):
                continue  # the vCPU thread is between exits: it flushes itself
            try:
                if not self._stopping.is_set():
                    now = time.monotonic()
                    if now - self._last_flush >= _FLUSH_EVERY_S:
                        self._flush(now)
            finally:
                self._writer_lock.release()

    def _flush(self, now: float) -> None:
        if self.writer.pending_bytes:
            self.writer.flush()
        self._last_flush = now

    def _log(self, event: list) -> None:
        self.writer.append(self.index, event)

    def booted(self) -> None:
        # landings hash the pages the *guest* wrote: forget the loader's writes, which
        # some backends log (the software one) and others do not (KVM)
        self.cpu.dirty_bitmap()

    # --- inputs ---
    def clock_ns(self) -> int:
        v = self.live.clock_ns()
        self._log([EventKind.CLOCK, v])
        return v

    def wall_time(self) -> float:
        v = self.live.wall_time()
        self._log([EventKind.WALL, v])
        return v

    def timer_due(self, index: int, deadline_ns: int | None) -> int | None:
        v = self.live.timer_due(index, deadline_ns)
        if v is not None:
            assert deadline_ns is not None
            self._log([EventKind.TIMER, v - deadline_ns])  # lateness: small, compresses
        return v

    def serial_input(self, index: int, room: int) -> bytes:
        data = self.live.serial_input(index, room)
        if data:
            self._log([EventKind.SERIAL_RX, data])
        return data

    def read_value(self, index: int, exit: VcpuExit, value: bytes) -> bytes:
        self._log(exit_event(exit, value))
        return value

    def device_input(self, index: int, device: str, room: int) -> bytes:
        data = self.live.device_input(index, device, room)
        if data:
            self._log([EventKind.DEVICE_INPUT, device, data])
        return data

    def entropy(self, index: int, size: int) -> bytes:
        data = self.live.entropy(index, size)
        self._log([EventKind.ENTROPY, data])
        return data

    # --- the timeline ---
    def on_exit(self, index: int, exit: VcpuExit) -> None:
        self.index = index
        kind = exit.kind
        if kind in _READS:
            return  # logged with its value in read_value
        self._log(exit_event(exit, exit.data))
        if kind in FORCED_EXITS:
            self.forced_exits += 1
            self._log(self.landing())
        self._injected_before_entry = False
        now = time.monotonic()
        if now - self._last_flush >= _FLUSH_EVERY_S:
            # after the exit's own events: a trace cut here replays up to this exit
            self._flush(now)

    def landing(self) -> list:
        """The LANDING event of a forced exit: register and memory fingerprints.

        A backend that counts instructions exactly adds the count: replay on it then stops
        at that count instead of searching with breakpoints.
        """
        cpu = self.cpu
        progressed = not (self._injected_before_entry and cpu.injection_pending())
        count = None if self.counter is None else self.counter.instructions
        # kernel irqchip: the kick may find the vCPU halted inside KVM, which replay must
        # reach by running into the same HLT (a breakpoint after it would never fire)
        halted = self.kernel_irqchip is not None and self.kernel_irqchip.halted()
        return landing_payload(
            cpu.get_regs(), cpu.dirty_bitmap(), cpu.ram_page, progressed, count, halted
        )

    def on_inject(self, index: int, vector: int) -> None:
        self._injected_before_entry = True
        self._log([EventKind.INJECT, vector])

    def on_irq_line(self, index: int, line: int, level: bool) -> None:
        self._log([EventKind.IRQ_LINE, line, int(level)])

    def run(self, cpu: CpuBackend) -> VcpuExit:
        """Enter the guest; while it runs, the flusher thread may write the open chunk."""
        if self._flusher is None:
            return cpu.run()
        self._writer_lock.release()
        try:
            return cpu.run()
        finally:
            self._writer_lock.acquire()

    # --- pass-through ---
    def entering_guest(self, deadline_ns: int | None, poll_ns: int | None = None) -> None:
        self.live.entering_guest(deadline_ns, poll_ns)

    def stop_requested(self) -> StopRequest | None:
        return self.live.stop_requested()

    def idle(self, deadline_ns: int | None) -> None:
        # A halted guest is a natural moment to put the open chunk on disk, so a recording
        # killed while the guest waits for input keeps everything up to the wait.
        now = time.monotonic()
        long_wait = deadline_ns is None or deadline_ns - self.live.clock_ns() > _LONG_WAIT_NS
        if long_wait or now - self._last_flush > _FLUSH_INTERVAL_S:
            self._flush(now)
        counter = self.counter  # its TSC is virtual: host time moves it only here
        tsc_before = None if counter is None else counter.tsc_offset
        self.live.idle(deadline_ns)
        tsc_after = None if counter is None else counter.tsc_offset
        if tsc_after != tsc_before:
            # a virtual TSC moved on while the guest was halted, by host time: an input
            self._log([EventKind.TSC, tsc_after])

    def input_possible(self) -> bool:
        return self.live.input_possible()
