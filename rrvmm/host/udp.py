"""Host ends of the virtio console and network: UDP sockets on the loopback, no privileges.

``--net udp:127.0.0.1:PORT`` (and ``--vconsole`` alike) binds PORT; every datagram that
arrives is one network frame (or a run of console bytes) for the guest, and what the guest
sends goes back to whoever sent last. A reader thread queues datagrams and wakes the
machine; the machine takes them between exits through the seam, which records them. The
queue is bounded: a guest that never drains it costs at most MAX_QUEUED_BYTES, and what
does not fit is dropped with a warning (once, then a count when the port closes), as a
NIC drops what arrives with its ring full.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Callable

from rrvmm.host.terminal import take_bytes

__all__ = ["UdpPort", "parse_udp", "MAX_QUEUED_DATAGRAMS", "MAX_QUEUED_BYTES"]

log = logging.getLogger("rrvmm")

_MAX_DATAGRAM = 65535
#: What waits for a guest that does not drain its input (a virtio-net rx queue holds 256
#: buffers); beyond either bound new datagrams are dropped and counted.
MAX_QUEUED_DATAGRAMS = 1024
MAX_QUEUED_BYTES = 4 << 20


def parse_udp(spec: str, option: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` -> (host, port); ValueError with a one-line message otherwise."""
    kind, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "udp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {spec!r}: expected udp:HOST:PORT, e.g. udp:127.0.0.1:5555")
    return host, int(port)


class UdpPort:
    """A bound UDP socket whose datagrams queue, boundedly, for the guest."""

    def __init__(self, host: str, port: int, name: str = "udp") -> None:
        self.name = name  # for messages: the option it serves (--net, --vconsole)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = self.sock.getsockname()
        self._peer: tuple[str, int] | None = None
        self._pending: deque[bytes] = deque()
        self._queued_bytes = 0
        self.dropped = 0  # datagrams dropped because the queue was full
        self.dropped_bytes = 0
        self._lock = threading.Lock()
        self._wake: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._thread = threading.Thread(target=self._reader, name="udp-port", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(_MAX_DATAGRAM)
            except OSError:
                return  # closed
            with self._lock:
                self._peer = peer
                if (
                    len(self._pending) >= MAX_QUEUED_DATAGRAMS
                    or self._queued_bytes + len(data) > MAX_QUEUED_BYTES
                ):
                    self._drop(len(data))
                    continue
                self._pending.append(data)
                self._queued_bytes += len(data)
            self._wake()

    def _drop(self, size: int) -> None:
        """The guest is not taking input as fast as it comes: drop, as a full NIC would."""
        self.dropped += 1
        self.dropped_bytes += size
        if self.dropped == 1:
            log.warning(
                "%s: the guest is not taking input (%d datagrams, %d bytes queued);"
                " dropping what comes until it does",
                self.name, len(self._pending), self._queued_bytes,
            )  # fmt: skip

    def has_input(self) -> bool:
        return bool(self._pending)

    def take_frame(self) -> bytes:
        with self._lock:
            data = self._pending.popleft() if self._pending else b""
            self._queued_bytes -= len(data)
            return data

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, datagrams read as one byte stream (the console)."""
        with self._lock:
            data = take_bytes(self._pending, limit)
            self._queued_bytes -= len(data)
            return data

    def send(self, data: bytes) -> None:
        if self._peer is not None:
            try:
                self.sock.sendto(data, self._peer)
            except OSError:
                pass  # the peer went away: like a cable pulled, not an error for the guest

    def close(self) -> None:
        self.sock.close()
        if self.dropped:
            log.warning(
                "%s: dropped %d datagrams (%d bytes) the guest did not take in time",
                self.name, self.dropped, self.dropped_bytes,
            )  # fmt: skip
