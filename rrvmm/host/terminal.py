"""The host side of the guest's serial console: stdout for TX, stdin for RX.

On a terminal, stdin goes to raw mode so every key reaches the guest; Ctrl-A then x quits
(Ctrl-A Ctrl-A sends one Ctrl-A), as in QEMU. From a pipe, bytes are read as they come and
EOF simply ends input. A reader thread collects input and wakes the vCPU, because the
guest may be running without exits when a key arrives.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import tty
from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO

from rrvmm.errors import ExitStatus
from rrvmm.seam import StopRequest

__all__ = ["SerialHost", "ESCAPE_KEY", "ESCAPE_STOP", "MAX_PENDING_INPUT"]

#: Bytes of piped input read ahead of the guest (see SerialHost._wait_for_room).
MAX_PENDING_INPUT = 1 << 20

ESCAPE_KEY = 0x01  # Ctrl-A
_QUIT_KEY = ord("x")
ESCAPE_STOP = StopRequest("stopped by the user (Ctrl-A x)", ExitStatus.INTERRUPTED)


def take_bytes(pending: deque[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes from a queue of chunks read as one stream (a partly taken
    chunk keeps its rest at the front)."""
    out = bytearray()
    while pending and len(out) < limit:
        chunk = pending.popleft()
        need = limit - len(out)
        out += chunk[:need]
        if len(chunk) > need:
            pending.appendleft(chunk[need:])
    return bytes(out)


class SerialHost:
    """Guest serial output to a binary stream, host input bytes to a queue."""

    def __init__(
        self,
        output: BinaryIO | None = None,
        input_fd: int | None = 0,
        raw_tty: bool = True,
    ) -> None:
        self._out = output if output is not None else sys.stdout.buffer
        self._in_fd = input_fd
        self._raw_tty = raw_tty
        self._pending: deque[bytes] = deque()
        self._queued = 0  # bytes in _pending
        self._room = threading.Event()  # set when the guest took some
        self._lock = threading.Lock()
        self.input_closed = input_fd is None
        self.stop: StopRequest | None = None  # the first stop asked for (escape key, signal)
        self._wake: Callable[[], None] = lambda: None
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._escape = False
        self.transcript = bytearray()  # all guest output, for replay comparison

    # --- output ---
    def write(self, data: bytes) -> None:
        self.transcript += data
        self._out.write(data)
        if b"\n" in data:
            self._out.flush()

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()

    # --- input ---
    def start(self, wake: Callable[[], None]) -> None:
        """Begin reading input; ``wake`` is called (from the reader thread) on new input."""
        self._wake = wake
        if self._in_fd is None:
            return
        self._thread = threading.Thread(target=self._reader, name="serial-input", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        fd = self._in_fd
        assert fd is not None
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                # End a wait, but do not kick: EOF gives a running guest nothing, and a
                # kick would put a forced exit at a host-timed point in the recording.
                self.input_closed = True
                self._event.set()
                return
            if self._is_tty():
                data = self._filter_escape(data)
            if data:
                with self._lock:
                    self._pending.append(data)
                    self._queued += len(data)
            self._notify()
            if self.quit_requested:
                return
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Piped input waits while MAX_PENDING_INPUT bytes wait for the guest: a guest that
        never reads its UART must not make rrvmm hold a whole file (nothing is lost, the
        pipe just fills). A terminal is always read, so Ctrl-A x keeps working."""
        while self._queued >= MAX_PENDING_INPUT and not self._is_tty():
            self._room.wait(0.5)
            self._room.clear()

    def _filter_escape(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._escape:
                self._escape = False
                if b == _QUIT_KEY:
                    self.stop = self.stop or ESCAPE_STOP
                    break
                if b == ESCAPE_KEY:
                    out.append(b)
                continue
            if b == ESCAPE_KEY:
                self._escape = True
                continue
            out.append(b)
        return bytes(out)

    def _notify(self) -> None:
        self._event.set()
        self._wake()

    @property
    def quit_requested(self) -> bool:
        return self.stop is not None

    def request_stop(self, stop: StopRequest) -> None:
        """End the run at the next point between exits (thread-safe: from a signal's
        watcher thread). The first request holds; each call kicks the vCPU again."""
        if self.stop is None:
            self.stop = stop
        self._notify()

    def notify_input(self) -> None:
        """Other host input (a virtio port) arrived: end a wait and kick the vCPU."""
        self._notify()

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of pending input (removed from the queue)."""
        if limit <= 0 or not self._pending:
            return b""
        with self._lock:
            data = take_bytes(self._pending, limit)
            self._queued -= len(data)
        self._room.set()
        return data

    def has_input(self) -> bool:
        return bool(self._pending)

    def wait(self, timeout: float | None) -> None:
        """Block until new input arrives or ``timeout`` seconds pass (None: until input).

        Input already queued does not end the wait: the guest could not take it (its
        receive FIFO is full), and returning at once would spin.
        """
        self.flush()
        if self.quit_requested:
            return
        self._event.wait(timeout)
        self._event.clear()

    def _is_tty(self) -> bool:
        return self._in_fd is not None and self._raw_tty and os.isatty(self._in_fd)

    @contextlib.contextmanager
    def terminal(self) -> Iterator[None]:
        """Raw mode on a terminal stdin for the duration, restored however we leave."""
        if not self._is_tty():
            yield
            return
        assert self._in_fd is not None
        saved = termios.tcgetattr(self._in_fd)
        try:
            tty.setraw(self._in_fd, termios.TCSANOW)
            mode = termios.tcgetattr(self._in_fd)
            mode[1] |= termios.OPOST | termios.ONLCR  # keep "\n" a new line on screen
            termios.tcsetattr(self._in_fd, termios.TCSANOW, mode)
            yield
        finally:
            termios.tcsetattr(self._in_fd, termios.TCSADRAIN, saved)
