"""SIGINT and SIGTERM as a request to stop at the next exit, so a recording ends closed.

rr finishes its trace on Ctrl-C; so does rrvmm. A signal must never raise inside the run:
on the software CPU the interpreter would deliver ``KeyboardInterrupt`` inside a unicorn
hook, where ctypes swallows it, and on KVM it would leave the trace without its footer.
So while installed, both signals are blocked in the main thread (and so in every thread
started after it) and a watcher thread takes them with ``sigtimedwait``, whichever thread
they were sent to. It turns each into a ``StopRequest`` for its listeners (the serial
host, which kicks the vCPU and ends a wait) and repeats that every ``_KICK_AGAIN_S`` until
the run is over: a KVM kick that arrives while the vCPU thread is between two entries is
lost, and a guest computing without exits would otherwise run on. A second signal more
than ``_PATIENCE_S`` after the first, when the run has still not stopped (blocked writing
to a full pipe, say), ends the process at once, as Ctrl-C did before: what was flushed
stays, and the trace reads as cut.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from rrvmm.errors import ExitStatus
from rrvmm.seam import StopRequest

__all__ = ["StopSignals", "stop_signals", "STOP_FOR_SIGNAL"]

STOP_FOR_SIGNAL = {
    signal.SIGINT: StopRequest("stopped by the user (SIGINT)", ExitStatus.INTERRUPTED),
    signal.SIGTERM: StopRequest("stopped by SIGTERM", ExitStatus.TERMINATED),
}
_SIGNALS = set(STOP_FOR_SIGNAL)
_KICK_AGAIN_S = 0.05
_IDLE_WAIT_S = 3600.0
_PATIENCE_S = 1.0


class StopSignals:
    """While installed, SIGINT/SIGTERM set ``request`` and are passed to the listeners."""

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self._listeners: list[Callable[[StopRequest], None]] = []
        self._lock = threading.Lock()
        self._done = False
        self._thread: threading.Thread | None = None
        self._was_blocked: set[signal.Signals] = set()
        self._since = 0.0

    def listen(self, listener: Callable[[StopRequest], None]) -> None:
        """Call ``listener`` on every signal (and at once if one already came)."""
        with self._lock:
            self._listeners.append(listener)
            request = self.request
        if request is not None:
            listener(request)

    def install(self) -> None:
        """Take SIGINT and SIGTERM over (from the main thread, before other threads start)."""
        self._was_blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) & _SIGNALS
        self._thread = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._thread.start()

    def uninstall(self) -> None:
        """End the watcher and unblock the signals (one that comes later acts as before)."""
        self._done = True
        thread = self._thread
        if thread is not None and thread.ident is not None and thread.is_alive():
            with contextlib.suppress(OSError, ProcessLookupError):
                signal.pthread_kill(thread.ident, signal.SIGTERM)  # ends its wait
            thread.join(timeout=1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS - self._was_blocked)

    def _watch(self) -> None:
        while not self._done:
            timeout = _IDLE_WAIT_S if self.request is None else _KICK_AGAIN_S
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if self._done:
                return
            if info is not None:
                if self.request is None:
                    self.request = STOP_FOR_SIGNAL[signal.Signals(info.si_signo)]
                    self._since = time.monotonic()
                elif time.monotonic() - self._since > _PATIENCE_S:
                    self._give_up()
            if self.request is not None:
                self._tell(self.request)

    def _give_up(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("rrvmm: the run did not stop; exiting now (a trace is left cut)\n")
            sys.stderr.flush()
        assert self.request is not None
        os._exit(self.request.status)

    def _tell(self, request: StopRequest) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(request)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """SIGINT/SIGTERM become stop requests for the duration (outside the main thread,
    where handlers cannot be installed, the signals keep their handlers)."""
    stops = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    stops.install()
    try:
        yield stops
    finally:
        stops.uninstall()
