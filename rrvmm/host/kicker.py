"""A host timer that forces the vCPU out of the guest when a device deadline passes.

A guest computing without exits never hands control back to the run loop, so the PIT's
next interrupt would wait until the guest happened to do I/O. The kicker sleeps until the
earliest deadline the loop published and then kicks the vCPU. A kick can be lost (it
arrives while the loop is between exits); so until the loop publishes a new deadline, the
kicker repeats the kick with a growing delay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Kicker"]

_RETRY_START_NS = 500_000
_RETRY_MAX_NS = 20_000_000


class Kicker:
    def __init__(self, kick: Callable[[], None]) -> None:
        self._kick = kick
        self._cond = threading.Condition()
        self._deadline: int | None = None  # when to kick next (time.monotonic_ns())
        self._armed: int | None = None  # the deadline the loop last published
        self._retry_ns = _RETRY_START_NS
        self._stop = False
        self.kicks = 0
        self._thread = threading.Thread(target=self._loop, name="vcpu-kicker", daemon=True)
        self._thread.start()

    def arm(self, deadline_ns: int | None) -> None:
        """Kick at ``deadline_ns`` (monotonic) unless re-armed; None disarms.

        Publishing the same deadline again is a no-op, so a kick that was lost keeps
        being retried until the loop has handled the deadline and moved on.
        """
        if deadline_ns == self._armed:
            return
        with self._cond:
            self._armed = deadline_ns
            self._retry_ns = _RETRY_START_NS
            earlier = self._deadline is None or (
                deadline_ns is not None and deadline_ns < self._deadline
            )
            self._deadline = deadline_ns
            if earlier:
                self._cond.notify()

    def _loop(self) -> None:
        with self._cond:
            while not self._stop:
                d = self._deadline
                if d is None:
                    self._cond.wait()
                    continue
                now = time.monotonic_ns()
                if now < d:
                    self._cond.wait((d - now) / 1e9)
                    continue
                self.kicks += 1
                self._kick()
                self._deadline = now + self._retry_ns
                self._retry_ns = min(self._retry_ns * 2, _RETRY_MAX_NS)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=1)
