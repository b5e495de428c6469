"""Where hunt runs execute: a local pool (the default) or a Dask cluster.

Each run is a child ``rrvmm record`` process (``rrvmm.hunt.recording``), so locally a
thread per slot is all the pool needs: the runs themselves are processes, each in its own
process group, and stopping the hunt kills exactly those groups. Over a cluster the same
function runs on the Dask workers (chosen over Ray by ``bench/hunt_engines.py``: see the
README), the guest images go to every worker once, and the packed failing traces come
back as bytes; a cluster-wide ``distributed.Event`` tells running tasks to stop.
"""

from __future__ import annotations

import concurrent.futures as cf
import socket
import threading
import time
import uuid
from typing import Any, Protocol
from urllib.parse import urlsplit

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.hunt.recording import RunOutcome, RunTask, record_once

__all__ = ["Pool", "LocalPool", "DaskPool"]

_CONNECT_TIMEOUT_S = 15
_STOP_POLL_S = 1.0


class Pool(Protocol):
    name: str
    slots: int  # runs in flight at once

    def submit(self, task: RunTask) -> None: ...
    def completed(self, timeout_s: float) -> list[RunOutcome]: ...
    def in_flight(self) -> int: ...
    def stop(self) -> list[RunOutcome]: ...
    def close(self) -> None: ...


class LocalPool:
    """``slots`` runs at a time on this machine; traces are packed into ``keep_dir``."""

    name = "local"

    def __init__(self, slots: int, keep_dir: str) -> None:
        self.slots = slots
        self._keep_dir = keep_dir
        self._stop = threading.Event()
        self._exec = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="hunt")
        self._pending: set[cf.Future[RunOutcome]] = set()

    def submit(self, task: RunTask) -> None:
        self._pending.add(self._exec.submit(record_once, task, self._keep_dir, self._stop.is_set))

    def in_flight(self) -> int:
        return len(self._pending)

    def completed(self, timeout_s: float) -> list[RunOutcome]:
        if not self._pending:
            return []
        done, self._pending = cf.wait(self._pending, timeout_s, cf.FIRST_COMPLETED)
        return [f.result() for f in done]

    def stop(self) -> list[RunOutcome]:
        """Kill every running recorder (each run sees the flag within 0.1 s) and return
        what the runs said, including those that finished meanwhile."""
        self._stop.set()
        for f in self._pending:
            f.cancel()
        done = cf.wait(self._pending).done
        self._pending = set()
        return [f.result() for f in done if not f.cancelled()]

    def close(self) -> None:
        self._exec.shutdown(wait=True, cancel_futures=True)


def _remote_run(task: RunTask, ship: dict[str, tuple[str, bytes]], stop_name: str) -> RunOutcome:
    """On a Dask worker: one run, with the images the client scattered; the packed trace
    comes back in the outcome. Stops when the hunt's Event is set (checked once a second:
    each check asks the scheduler)."""
    from distributed import Event

    task.ship = ship
    stop = Event(stop_name)
    state = {"at": 0.0, "set": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if now - state["at"] >= _STOP_POLL_S:
            state["at"], state["set"] = now, stop.is_set()
        return state["set"]

    return record_once(task, None, should_stop)


def _probe(address: str) -> None:
    """Open and close a TCP connection to a ``tcp://HOST:PORT`` scheduler address."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        socket.create_connection((parts.hostname, parts.port), _CONNECT_TIMEOUT_S).close()


class DaskPool:
    """Runs on the Dask cluster whose scheduler is at ``address``."""

    name = "dask"

    def __init__(self, address: str, slots: int | None, ship: dict[str, tuple[str, bytes]]) -> None:
        try:
            from distributed import Client, Event
        except ImportError:
            raise RrvmmError(
                "--cluster needs Dask: pip install 'rrvmm[cluster]'", ExitStatus.USAGE
            ) from None
        try:
            _probe(address)  # a refused connection fails now, not after Dask's retries
            self._client = Client(address, timeout=_CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise RrvmmError(
                f"--cluster {address}: cannot reach the Dask scheduler ({e})", ExitStatus.NO_KVM
            ) from None
        threads = sum(self._client.nthreads().values())
        if threads == 0:
            self._client.close()
            raise RrvmmError(f"--cluster {address}: the cluster has no workers", ExitStatus.NO_KVM)
        self.slots = slots or threads
        self._stop_name = f"rrvmm-hunt-stop-{uuid.uuid4().hex}"
        self._stop = Event(self._stop_name, client=self._client)
        # every worker gets the images once, not with each task
        self._ship: Any = self._client.scatter(ship, broadcast=True) if ship else {}
        self._pending: list[Any] = []

    def submit(self, task: RunTask) -> None:
        fut = self._client.submit(_remote_run, task, self._ship, self._stop_name, pure=False)
        self._pending.append(fut)

    def in_flight(self) -> int:
        return len(self._pending)

    def _collect(self, futures: list[Any]) -> list[RunOutcome]:
        out = []
        for f in futures:
            if f.status == "cancelled":
                continue
            try:
                out.append(f.result())
            except Exception as e:  # noqa: BLE001 - a worker's failure is that run's outcome
                out.append(RunOutcome(-1, None, None, False, 0.0, error=f"worker failed: {e}"))
        return out

    def completed(self, timeout_s: float) -> list[RunOutcome]:
        deadline = time.monotonic() + timeout_s
        while True:
            done = [f for f in self._pending if f.done()]
            if done or time.monotonic() >= deadline or not self._pending:
                break
            time.sleep(min(0.05, timeout_s))
        self._pending = [f for f in self._pending if not f.done()]
        return self._collect(done)

    def stop(self) -> list[RunOutcome]:
        """Tell running tasks to kill their recorders (they poll the Event) and drop the
        queued ones; what already finished is returned."""
        self._stop.set()
        done = [f for f in self._pending if f.done()]
        rest = [f for f in self._pending if not f.done()]
        if rest:
            self._client.cancel(rest)
        self._pending = []
        return self._collect(done)

    def close(self) -> None:
        self._client.close()
