"""Hostile gdb packets: every length capped, every parse linear, every run interruptible.

Against a real `rrvmm replay --gdb` server (a soft-backend recording of guests/demo.c):
huge watchpoints, addresses past 2^64 or in the non-canonical hole, a 90 KB monitor
command, a trace damaged past the point the server started from. Against the in-process
server over a target that runs until interrupted: a flood of acks and packets during a
`c`, and Ctrl-C still stopping it. The server's peak RSS (VmHWM) stays under 512 MB; socket
timeouts catch a hang (issue 17).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gdbstub_fake import FakeTarget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdb_driver import ReplayServer
from rrvmm.gdbstub.commands import (
    ADDRESS_LIMIT,
    MAX_MONITOR_COMMAND,
    MAX_WATCH_LENGTH,
    GdbCommands,
)
from rrvmm.gdbstub.framing import Packet, PacketReader, frame
from rrvmm.gdbstub.server import GdbServer
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.events import EventKind
from rrvmm_cli import rrvmm

RSS_LIMIT_KB = 512 * 1024
REPLY_TIMEOUT_S = 60  # a reply later than this is a hang


class Client:
    """A raw gdb remote-protocol client in no-ack mode."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT_S)
        self.reader = PacketReader()
        self.packets: list[bytes] = []
        assert self.ask(b"QStartNoAckMode") == b"OK"

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def reply(self) -> bytes:
        while not self.packets:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("server hung up")
            self.packets += [e.payload for e in self.reader.feed(data) if isinstance(e, Packet)]
        return self.packets.pop(0)

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.reply()

    def stop_reply(self) -> bytes:
        """The next reply that is not console output (``O...``)."""
        while (r := self.reply()).startswith(b"O") and r != b"OK":
            pass
        return r

    def close(self) -> None:
        self.sock.close()


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def demo_trace(guest: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gdb-hostile") / "demo.rrt"
    r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("demo")), "-o", str(path))
    assert r.status == 0, r.err
    return path


@pytest.fixture
def replay_gdb(demo_trace: Path) -> Iterator[tuple[ReplayServer, Client]]:
    server = ReplayServer(demo_trace)
    client = Client(server.port)
    try:
        yield server, client
    finally:
        client.close()
        server.close()


def test_huge_watchpoints_are_refused_and_c_still_answers(
    replay_gdb: tuple[ReplayServer, Client],
) -> None:
    server, gdb = replay_gdb
    assert gdb.ask(b"Z2,100000,ffffffffffffffff") == b"E01"
    assert gdb.ask(b"Z2,100000,100000000") == b"E01"
    assert gdb.ask(b"Z3,ffffffffffffffff,2") == b"E01"  # runs past 2^64
    assert gdb.ask(b"Z2,100000,%x" % MAX_WATCH_LENGTH) == b"OK"  # the largest allowed
    assert gdb.ask(b"z2,100000,%x" % MAX_WATCH_LENGTH) == b"OK"
    stop = gdb.ask(b"c")
    assert stop[:1] in (b"T", b"W"), stop
    assert vm_hwm_kb(server.proc.pid) < RSS_LIMIT_KB


def test_memory_reads_outside_the_address_space_are_errors(
    replay_gdb: tuple[ReplayServer, Client],
) -> None:
    _, gdb = replay_gdb
    assert gdb.ask(b"m10000000000000000,4").startswith(b"E")  # 2^64
    assert gdb.ask(b"mffffffffffffffff,10").startswith(b"E")  # runs past 2^64
    assert gdb.ask(b"m800000000000,4").startswith(b"E")  # the non-canonical hole
    assert gdb.ask(b"m" + b"f" * 5000 + b",4").startswith(b"E")  # a 20000-bit number
    assert gdb.ask(b"m100000,4") == bytes(gdb.ask(b"m100000,4"))  # still serving


def test_long_monitor_command_is_refused_quickly(replay_gdb: tuple[ReplayServer, Client]) -> None:
    _, gdb = replay_gdb
    argument = b"'\"" * 22_500  # 45 KB of quotes: what made shlex take minutes
    gdb.send(b"qRcmd," + argument.hex().encode())
    out = gdb.reply()
    assert out.startswith(b"O") and b"longer than" in bytes.fromhex(out[1:].decode())
    assert gdb.reply() == b"OK"
    text = b"exits 0 " + b"9" * (MAX_MONITOR_COMMAND - 9)
    assert gdb.ask(b"qRcmd," + text.hex().encode()).startswith(b"O")  # a bad count: an error
    assert gdb.reply() == b"OK"


def test_damaged_trace_during_c_is_one_line(
    demo_trace: Path, tmp_path: Path, guest: Callable[[str], Path]
) -> None:
    """An unknown event kind far into the trace: the server starts (it reads the head),
    and `c` meets the damage: gdb gets E03, the server's stderr one line, no traceback."""
    bad = tmp_path / "late-damage.rrt"
    with TraceReader(demo_trace) as r:
        events = [(i, list(e)) for i, e in r.events()]
        header, footer = dict(r.header), r.footer
    late = events[-10][0]
    with TraceWriter(bad, header, chunk_bytes=256) as w:
        for index, event in events:
            if index == late:
                w.append(index, [99, 0])  # resealed: only the schema can tell
            w.append(index, event)
        w.close(footer)
    server = ReplayServer(bad)
    gdb = Client(server.port)
    try:
        note = gdb.ask(b"c")  # gdb prints the reason, then "Remote failure reply: E03"
        assert note.startswith(b"O") and b"corrupt chunk" in bytes.fromhex(note[1:].decode())
        assert gdb.reply() == b"E03"
        assert gdb.ask(b"D") == b"OK"
    finally:
        gdb.close()
        err = server.close()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and "corrupt chunk" in lines[0] and "unknown event kind" in lines[0]
    assert int(EventKind.EXIT) == 1


# -- the in-process server over a target that runs until interrupted ---------------------------


@pytest.fixture
def hanging() -> Iterator[tuple[GdbServer, FakeTarget]]:
    target = FakeTarget(hang=True)
    server = GdbServer(target, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, target
    finally:
        target.interrupt()
        server.close()
        thread.join(10)


def test_flood_during_a_run_is_not_held_and_ctrl_c_still_stops(
    hanging: tuple[GdbServer, FakeTarget],
) -> None:
    server, target = hanging
    gdb = Client(server.address[1])
    try:
        gdb.send(b"c")
        assert target.running.wait(REPLY_TIMEOUT_S)
        flood = b"+" * (1 << 20)
        for _ in range(16):  # 16 MB of acks: once buffered whole, object by object
            gdb.sock.sendall(flood)
        for _ in range(1000):
            gdb.send(b"?")
        gdb.sock.sendall(b"\x03")
        assert gdb.stop_reply().startswith(b"T02")  # SIGINT: the run stopped
        assert gdb.ask(b"qC") is not None
        # the packets held for after the stop were answered first, and at most 64 of them
        answered = 0
        while (r := gdb.packets.pop(0) if gdb.packets else gdb.reply()) != b"QC1":
            answered += 1
            assert r.startswith(b"T")
        assert 1 <= answered <= 64
    finally:
        gdb.close()


# -- the command layer: any numbers --------------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(0, 1 << 80),
    st.sampled_from([0, 1, (1 << 64) - 1, 1 << 64, 1 << 63, 0x800000000000, MAX_WATCH_LENGTH]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.integers(0, 5),
    address=_NUMBERS,
    length=_NUMBERS,
    insert=st.booleans(),
    read=st.booleans(),
)
def test_command_layer_bounds_every_length(
    kind: int, address: int, length: int, insert: bool, read: bool
) -> None:
    target = FakeTarget()
    seen: list[tuple[int, int]] = []
    original_read = target.read_memory

    def read_memory(addr: int, n: int) -> bytes:
        seen.append((addr, n))
        return original_read(addr, n)

    target.read_memory = read_memory  # type: ignore[method-assign]
    stub = GdbCommands(target)
    if read:
        reply = stub.handle(b"m%x,%x" % (address, length))[0]
    else:
        reply = stub.handle(b"%s%d,%x,%x" % (b"Z" if insert else b"z", kind, address, length))[0]
    assert reply in (b"", b"OK") or reply.startswith(b"E") or read
    for addr, n in seen:
        assert 0 <= addr and addr + n <= ADDRESS_LIMIT and n <= stub.packet_size
    for addr, n, _ in target.watchpoints:
        assert n <= MAX_WATCH_LENGTH and addr + n <= ADDRESS_LIMIT
