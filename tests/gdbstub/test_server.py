"""The TCP server on a raw socket: acks, no-ack mode, Ctrl-C, bad packets, lifecycle."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from gdbstub_fake import FakeTarget

from rrvmm.gdbstub.framing import Ack, Nak, Packet, PacketReader, frame
from rrvmm.gdbstub.server import GdbServer, listen_address
from rrvmm.target import Stop, StopKind


class Client:
    """A minimal gdb: send framed packets, read events back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = PacketReader()
        self.events: list[object] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.send_raw(frame(payload))

    def next_event(self) -> object:
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server hung up")
            self.events += self.reader.feed(data)
        return self.events.pop(0)

    def packet(self) -> bytes:
        """The next packet's payload, skipping acks."""
        while True:
            ev = self.next_event()
            if isinstance(ev, Packet):
                assert ev.checksum_ok
                return ev.payload

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.packet()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served() -> Iterator[tuple[GdbServer, FakeTarget, threading.Thread]]:
    target = FakeTarget()
    server = GdbServer(target, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, target, thread
    finally:
        server.close()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def client(served: tuple[GdbServer, FakeTarget, threading.Thread]) -> Iterator[Client]:
    c = Client(served[0].address[1])
    try:
        yield c
    finally:
        c.close()


def test_address_is_bound() -> None:
    with GdbServer(FakeTarget(), port=0) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0


def test_ack_mode(client: Client) -> None:
    client.send_raw(b"+")
    client.send(b"?")
    assert isinstance(client.next_event(), Ack)
    ev = client.next_event()
    assert isinstance(ev, Packet) and ev.payload.startswith(b"T05")


def test_bad_checksum_gets_nak_then_retransmit_works(client: Client) -> None:
    client.send_raw(b"$?#00")
    assert isinstance(client.next_event(), Nak)
    client.send(b"?")
    assert isinstance(client.next_event(), Ack)
    assert client.packet().startswith(b"T05")


def test_nak_resends_last_reply(client: Client) -> None:
    reply = client.ask(b"qC")
    assert reply == b"QC1"
    client.send_raw(b"-")
    assert client.packet() == b"QC1"


def test_no_ack_mode(client: Client) -> None:
    assert client.ask(b"QStartNoAckMode") == b"OK"
    client.send_raw(b"+")  # gdb acks the OK
    client.send(b"qC")
    assert client.next_event() == Packet(b"QC1")  # no '+' first any more
    # checksums are not enforced in no-ack mode (the spec lets the receiver ignore them)
    client.send_raw(b"$qC#00")
    assert client.next_event() == Packet(b"QC1")


def test_garbage_and_malformed_keep_connection(client: Client) -> None:
    client.send_raw(b"\r\nnoise\x00\xff")
    assert client.ask(b"*!") == b"E01"  # run length with nothing to repeat
    assert client.ask(b"m2000") == b"E01"
    assert client.ask(b"qNoSuchThing") == b""
    assert client.ask(b"m2000,8") == b"0010000000000000"


def test_run_and_stop(client: Client) -> None:
    assert client.ask(b"vCont;s:1") == b"T05thread:1;10:0111000000000000;"
    assert client.ask(b"bs") == b"T05thread:1;10:0011000000000000;"
    assert client.ask(b"bs") == b"T05replaylog:begin;thread:1;10:0011000000000000;"


def test_ctrl_c_interrupts_a_running_resume(
    served: tuple[GdbServer, FakeTarget, threading.Thread], client: Client
) -> None:
    _, target, _ = served
    target.hang = True
    client.ask(b"QStartNoAckMode")
    client.send(b"vCont;c")
    assert target.running.wait(5)
    client.send_raw(b"\x03")
    assert client.packet() == b"T02thread:1;10:0011000000000000;"
    assert target.interrupts == 1
    target.hang = False
    assert client.ask(b"?").startswith(b"T02")


def test_packets_during_a_run_wait_for_the_stop(
    served: tuple[GdbServer, FakeTarget, threading.Thread], client: Client
) -> None:
    _, target, _ = served
    target.hang = True
    client.ask(b"QStartNoAckMode")
    client.send(b"c")
    assert target.running.wait(5)
    client.send(b"qC")  # not allowed by the protocol, but it must not be lost or reordered
    client.send_raw(b"\x03")
    assert client.packet().startswith(b"T02")
    assert client.packet() == b"QC1"


def test_hang_up_during_a_run_interrupts_the_target(
    served: tuple[GdbServer, FakeTarget, threading.Thread],
) -> None:
    server, target, _ = served
    target.hang = True
    c = Client(server.address[1])
    c.send(b"c")
    assert target.running.wait(5)
    c.close()
    deadline = time.monotonic() + 5
    while target.interrupts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert target.interrupts == 1
    # and the server takes the next gdb
    target.hang = False
    c2 = Client(server.address[1])
    assert c2.ask(b"qC") == b"QC1"
    c2.close()


def test_detach_closes_and_next_gdb_is_served(
    served: tuple[GdbServer, FakeTarget, threading.Thread],
) -> None:
    server, _, _ = served
    for _ in range(2):
        c = Client(server.address[1])
        assert c.ask(b"D") == b"OK"
        assert c.closed()
        c.close()


def test_kill_closes(client: Client) -> None:
    client.send(b"k")
    assert isinstance(client.next_event(), Ack)
    assert client.closed()


def test_exit_stop(served: tuple[GdbServer, FakeTarget, threading.Thread], client: Client) -> None:
    served[1].script.append(Stop(StopKind.EXITED, status=3))
    assert client.ask(b"c") == b"W03"


def test_serve_one_returns_after_detach() -> None:
    with GdbServer(FakeTarget(), port=0) as server:
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(server.serve_one()), daemon=True)
        t.start()
        c = Client(server.address[1])
        assert c.ask(b"D") == b"OK"
        t.join(5)
        assert result == [True]
        c.close()


def test_serve_one_timeout() -> None:
    with GdbServer(FakeTarget(), port=0) as server:
        assert server.serve_one(timeout=0.05) is False


def test_shutdown_ends_an_idle_connection(
    served: tuple[GdbServer, FakeTarget, threading.Thread], client: Client
) -> None:
    server, _, thread = served
    assert client.ask(b"qC") == b"QC1"
    server.shutdown()
    thread.join(5)
    assert not thread.is_alive()
    assert client.closed()


def test_packets_are_logged(caplog: pytest.LogCaptureFixture, client: Client) -> None:
    with caplog.at_level(logging.DEBUG, logger="rrvmm.gdbstub"):
        assert client.ask(b"qC") == b"QC1"
        time.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records if r.name == "rrvmm.gdbstub"]
    assert any("<- b'qC'" in m for m in messages), messages
    assert any("-> b'QC1'" in m for m in messages), messages


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (":1234", ("127.0.0.1", 1234)),
        ("1234", ("127.0.0.1", 1234)),
        ("localhost:99", ("localhost", 99)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("tcp::4321", ("127.0.0.1", 4321)),
        ("tcp:host:4321", ("host", 4321)),
        ("[::1]:1234", ("::1", 1234)),
        ("[::1]", ("::1", 1234)),
        ("myhost", ("myhost", 1234)),
        (" :0 ", ("127.0.0.1", 0)),
    ],
)
def test_listen_address(spec: str, expected: tuple[str, int]) -> None:
    assert listen_address(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", ":", "host:", ":abc", ":70000", "::1:1234", "[::1", "[::1]x", "[]:1", ":-1"]
)
def test_listen_address_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        listen_address(spec)
