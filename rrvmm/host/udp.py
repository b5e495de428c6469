"""Host ends of the virtio console and network: UDP sockets on the loopback, no privileges.

``--net udp:127.0.0.1:PORT`` (and ``--vconsole`` alike) binds PORT; every datagram that
arrives is one network frame (or a run of console bytes) for the guest, and what the guest
sends goes back to whoever sent last. A reader thread queues datagrams and wakes the
machine; the machine takes them between exits through the seam, which records them.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable

from rrvmm.host.terminal import take_bytes

__all__ = ["UdpPort", "parse_udp"]

_MAX_DATAGRAM = 65535


def parse_udp(spec: str, option: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` -> (host, port); ValueError with a one-line message otherwise."""
    kind, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "udp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option} {spec!r}: expected udp:HOST:PORT, e.g. udp:127.0.0.1:5555")
    return host, int(port)


class UdpPort:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = self.sock.getsockname()
        self._peer: tuple[str, int] | None = None
        self._pending: deque[bytes] = deque()
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
                self._pending.append(data)
            self._wake()

    def has_input(self) -> bool:
        return bool(self._pending)

    def take_frame(self) -> bytes:
        with self._lock:
            return self._pending.popleft() if self._pending else b""

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, datagrams read as one byte stream (the console)."""
        with self._lock:
            return take_bytes(self._pending, limit)

    def send(self, data: bytes) -> None:
        if self._peer is not None:
            try:
                self.sock.sendto(data, self._peer)
            except OSError:
                pass  # the peer went away: like a cable pulled, not an error for the guest

    def close(self) -> None:
        self.sock.close()
