"""Fuzzing the stub: 10,000+ random and malformed packets never make it raise or lose state."""

from __future__ import annotations

import re

from gdbstub_fake import FakeTarget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrvmm.gdbstub.commands import COMMANDS, GdbCommands
from rrvmm.gdbstub.framing import Packet, PacketReader, checksum, escape, frame

PACKETS_PER_EXAMPLE = 5
EXAMPLES = 2000  # x 5 packets = 10,000 per test

STOP_REPLY = re.compile(rb"^(T[0-9a-f]{2}([a-z0-9]+:[0-9a-z]*;)*|W[0-9a-f]{2})$")

prefixes = st.sampled_from([c.name for c in COMMANDS] + [b"q", b"Q", b"v", b"qXfer:", b"vCont"])
hexnum = st.integers(min_value=0, max_value=(1 << 70)).map(lambda n: b"%x" % n)
tokens = st.one_of(
    hexnum,
    st.sampled_from([b",", b":", b";", b"=", b"-1", b"}", b"*", b"#", b"$", b"target.xml", b"c"]),
    st.binary(max_size=6),
)
valid_looking = st.builds(
    lambda p, parts: p + b"".join(parts), prefixes, st.lists(tokens, max_size=8)
)
payloads = st.one_of(st.binary(max_size=40), valid_looking)


def check_stop_query(stub: GdbCommands) -> None:
    [reply] = stub.handle(b"?")
    assert reply == stub.stop_reply(stub.last_stop)
    assert STOP_REPLY.match(reply), reply


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(payloads, min_size=PACKETS_PER_EXAMPLE, max_size=PACKETS_PER_EXAMPLE),
       writable=st.booleans())  # fmt: skip
def test_command_layer_never_raises(batch: list[bytes], writable: bool) -> None:
    stub = GdbCommands(FakeTarget(writable=writable))
    for payload in batch:
        replies = stub.handle(payload)
        assert isinstance(replies, list)
        for reply in replies:
            assert isinstance(reply, bytes)
            assert reply != b"E04", payload  # E04 = a handler raised something unexpected
            # every reply can be framed and read back intact
            [event] = PacketReader().feed(frame(reply))
            assert isinstance(event, Packet) and event.checksum_ok
    check_stop_query(stub)


def framed_badly(payload: bytes, bad_checksum: bool, escaped: bool) -> bytes:
    body = escape(payload) if escaped else payload
    cs = (checksum(body) + (1 if bad_checksum else 0)) & 0xFF
    return b"$" + body + b"#" + b"%02x" % cs


wire_items = st.one_of(
    st.builds(framed_badly, payloads, st.booleans(), st.booleans()),
    st.binary(max_size=20),  # garbage, stray '$', '#', acks, ^C
    st.sampled_from([b"+", b"-", b"\x03", b"$", b"#", b"$#", b"#00", b"}"]),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(wire_items, min_size=PACKETS_PER_EXAMPLE, max_size=PACKETS_PER_EXAMPLE),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4))  # fmt: skip
def test_reader_and_commands_on_a_stream(items: list[bytes], cuts: list[int]) -> None:
    """Raw wire bytes, split anywhere, through the reader and into the command layer."""
    stream = b"".join(items)
    reader = PacketReader()
    stub = GdbCommands(FakeTarget())
    pos = 0
    for cut in sorted(cuts) + [len(stream)]:
        for event in reader.feed(stream[pos:cut]):
            if isinstance(event, Packet) and event.checksum_ok and not event.malformed:
                stub.handle(event.payload)
        pos = max(pos, cut)
    # whatever came before, a well-formed '?' still gets the right answer
    events = reader.feed(b"$" + b"#" + b"00" + frame(b"?"))
    packets = [e for e in events if isinstance(e, Packet)]
    assert packets[-1] == Packet(b"?")
    check_stop_query(stub)
