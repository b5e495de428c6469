"""The TCP side of the gdb stub: one gdb connection at a time over a :class:`Target`.

``GdbServer(target, port=0).serve_one()`` accepts one gdb, serves it until it detaches,
kills or hangs up, and returns; ``serve_forever()`` does that until :meth:`shutdown`.

While the target runs (``Target.resume`` blocks), the resume happens in a worker thread
and this thread keeps reading the socket, so gdb's Ctrl-C (a bare 0x03) reaches
``Target.interrupt()``. Packets that arrive meanwhile (a few at most: more are dropped)
wait until the stop reply is sent.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Iterable

from rrvmm.gdbstub.commands import PACKET_SIZE, GdbCommands, Resume
from rrvmm.gdbstub.framing import (
    ACK,
    NAK,
    Ack,
    Event,
    Interrupt,
    Nak,
    Packet,
    PacketReader,
    frame,
)
from rrvmm.target import Target

__all__ = ["GdbServer", "listen_address", "DEFAULT_HOST", "DEFAULT_PORT"]

log = logging.getLogger("rrvmm.gdbstub")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
_RECV = 65536
_MAX_RESENDS = 8
_MAX_HELD = 64  # packets held back while the target runs


def listen_address(spec: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse ``':1234'``, ``'1234'``, ``'host:1234'``, ``'[::1]:1234'`` or ``'host'``.

    A missing host means 127.0.0.1 (never all interfaces by accident); a ``tcp:`` prefix,
    as gdb writes it, is accepted. ValueError for anything else.
    """
    text = spec.strip()
    if text.startswith("tcp:"):
        text = text[4:]
    if not text:
        raise ValueError("empty listen address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad listen address {spec!r}")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(f"no port after ':' in {spec!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ValueError(f"no port after ':' in {spec!r}")
    elif text.isdigit():
        host, port_text = "", text
    elif ":" in text:
        raise ValueError(f"bad listen address {spec!r} (write IPv6 hosts as [addr]:port)")
    else:
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"bad port in listen address {spec!r}")
        port = int(port_text)
    else:
        port = default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {spec!r}")
    return host or DEFAULT_HOST, port


class GdbServer:
    """Serve the gdb remote protocol for ``target`` on ``host:port``.

    The socket is bound and listening once the constructor returns (``port=0`` picks a
    free port; see :attr:`address`). Not reentrant: one connection at a time.
    """

    def __init__(
        self,
        target: Target,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        packet_size: int = PACKET_SIZE,
    ) -> None:
        self.target = target
        self.packet_size = packet_size
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=1)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._serving = threading.Lock()  # held while a serve loop runs; close() waits
        self.address: tuple[str, int] = self._listener.getsockname()[:2]

    # -- lifecycle ------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve connections one after another until :meth:`shutdown`."""
        with self._serving:
            while not self._stopping.is_set():
                self._serve_one(None)

    def serve_one(self, timeout: float | None = None) -> bool:
        """Accept one gdb and serve it to the end. False if none came (timeout/shutdown)."""
        with self._serving:
            return self._serve_one(timeout)

    def _serve_one(self, timeout: float | None) -> bool:
        conn = self._accept(timeout)
        if conn is None:
            return False
        with conn:
            peer: object = "?"
            try:
                peer = conn.getpeername()
                log.info("gdb connected from %s", peer)
                commands = GdbCommands(self.target, packet_size=self.packet_size)
                _Connection(conn, commands, self._wake_r, self._stopping).run()
            except OSError as exc:
                log.info("gdb connection from %s lost: %s", peer, exc)
            else:
                log.info("gdb from %s disconnected", peer)
        return True

    def shutdown(self) -> None:
        """Make ``serve_forever``/``serve_one`` return soon; safe from any thread."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        """Shut down, wait for a serving thread to return, release the sockets."""
        self.shutdown()
        with self._serving:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> GdbServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, timeout: float | None) -> socket.socket | None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._listener, self._wake_r], [], [], timeout)
            if not ready:
                return None
            if self._listener in ready:
                try:
                    conn, _ = self._listener.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:  # e.g. the client gave up before we accepted
                    log.info("accept failed: %s", exc)
                    continue
                return conn
        return None


class _Connection:
    """One gdb session: framing, acks, dispatch, and interruptible resumes."""

    def __init__(
        self,
        sock: socket.socket,
        commands: GdbCommands,
        wake: socket.socket,
        stopping: threading.Event,
    ) -> None:
        self.sock = sock
        self.commands = commands
        self.wake = wake
        self.stopping = stopping
        self.reader = PacketReader()
        self.ack_mode = True
        self.last_sent = b""
        self.resends = 0
        self.pending: deque[Event] = deque()
        self.dropped = 0  # events dropped because they came, too many, during a run

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.pending:
                data = self._recv()
                if data is None:
                    return
                self.pending.extend(self.reader.feed(data))
            while self.pending:
                if not self._handle(self.pending.popleft()):
                    return

    def _recv(self, *extra: socket.socket) -> bytes | None:
        """Some bytes from gdb; None on hang-up or shutdown, b'' if one of ``extra`` woke us."""
        ready, _, _ = select.select([self.sock, self.wake, *extra], [], [])
        if self.wake in ready:
            return None
        if self.sock not in ready:
            return b""
        try:
            data = self.sock.recv(_RECV)
        except (ConnectionResetError, ConnectionAbortedError):
            return None
        return data or None

    # -- events ---------------------------------------------------------------------------

    def _handle(self, event: Event) -> bool:
        """Act on one event; False when the connection should end."""
        if isinstance(event, Ack):
            self.resends = 0
            return True
        if isinstance(event, Nak):
            if self.ack_mode and self.last_sent and self.resends < _MAX_RESENDS:
                self.resends += 1
                log.debug("-> (again) %r", self.last_sent)
                self.sock.sendall(self.last_sent)
            return True
        if isinstance(event, Interrupt):
            log.debug("<- ^C while stopped (ignored)")
            return True
        return self._packet(event)

    def _packet(self, packet: Packet) -> bool:
        log.debug("<- %r", packet.payload)
        if not packet.checksum_ok:
            if self.ack_mode:
                log.debug("bad checksum, asking again")
                self.sock.sendall(NAK)
                return True
            # No-ack mode: the receiver may ignore checksums (TCP already checked).
            log.warning("bad checksum in no-ack mode; using the packet anyway")
        elif self.ack_mode:
            self.sock.sendall(ACK)
        if packet.malformed:
            self._send([b"E01"])
            return True
        resp = self.commands.dispatch(packet.payload)
        self._send(resp.packets)
        if resp.no_ack:
            self.ack_mode = False
        if resp.resume is not None:
            reply = self._run(resp.resume)
            if reply is None:
                return False
            self._send([*self.commands.take_notes(), reply])
        return not resp.close

    def _send(self, payloads: Iterable[bytes]) -> None:
        for payload in payloads:
            data = frame(payload)
            log.debug("-> %r", payload if len(payload) < 200 else payload[:200] + b"...")
            self.last_sent = data
            self.resends = 0
            self.sock.sendall(data)

    # -- running the target ---------------------------------------------------------------

    def _hold(self, event: Event) -> None:
        """Keep a packet that came during a run for after the stop reply, within bounds.

        Acks and naks refer to what was sent before the run (an ack only resets the resend
        count); gdb sends nothing else while it waits for a stop but ^C, so beyond a few
        packets this is a flood, dropped and counted rather than held (it once took GBs).
        """
        if isinstance(event, Ack):
            self.resends = 0
        elif isinstance(event, Nak) or len(self.pending) >= _MAX_HELD:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("gdb sent more than %d packets during a run; dropping", _MAX_HELD)
        else:
            self.pending.append(event)

    def _run(self, resume: Resume) -> bytes | None:
        """Resume in a worker; forward ^C meanwhile. The stop reply, or None if gdb left."""
        result: list[bytes] = []
        done_r, done_w = socket.socketpair()

        def work() -> None:
            try:
                result.append(self.commands.run(resume))
            finally:
                done_w.send(b"!")

        worker = threading.Thread(target=work, name="rrvmm-gdbstub-resume", daemon=True)
        with done_r, done_w:
            worker.start()
            try:
                while worker.is_alive():
                    data = self._recv(done_r)
                    if data is None:  # gdb hung up (or shutdown): stop the target, leave
                        return None
                    for event in self.reader.feed(data):
                        if isinstance(event, Interrupt):
                            log.debug("<- ^C")
                            self.commands.target.interrupt()
                        else:
                            self._hold(event)
                    if not data:
                        worker.join()
            finally:
                if worker.is_alive():  # never leave a resume running behind us
                    self.commands.target.interrupt()
                    worker.join()
        return result[0]
