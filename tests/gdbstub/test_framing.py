"""Framing: checksums, escapes, run lengths and the streaming packet reader."""

from __future__ import annotations

import pytest

from rrvmm.gdbstub.framing import (
    Ack,
    FramingError,
    Interrupt,
    Nak,
    Packet,
    PacketReader,
    checksum,
    escape,
    frame,
    hexlify,
    rle_decode,
    unescape,
)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", 0x00),
        (b"OK", 0x9A),
        (b"g", 0x67),
        (b"qSupported", 0x37),
        (b"vMustReplyEmpty", 0x3A),
        (b"\xff\xff", 0xFE),
    ],
)
def test_checksum(payload: bytes, expected: int) -> None:
    assert checksum(payload) == expected


@pytest.mark.parametrize(
    ("payload", "framed"),
    [
        (b"OK", b"$OK#9a"),
        (b"", b"$#00"),
        (b"m1000,4", b"$m1000,4#%02x" % (sum(b"m1000,4") % 256)),
    ],
)
def test_frame(payload: bytes, framed: bytes) -> None:
    assert frame(payload) == framed


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b"abc", b"abc"),
        (b"#", b"}\x03"),
        (b"$", b"}\x04"),
        (b"}", b"}]"),
        (b"*", b"}\x0a"),
        (b"a#b$c}d*e", b"a}\x03b}\x04c}]d}\x0ae"),
        (bytes(range(256)), None),
    ],
)
def test_escape_roundtrip(raw: bytes, escaped: bytes | None) -> None:
    if escaped is not None:
        assert escape(raw) == escaped
    enc = escape(raw)
    assert not any(c in enc for c in b"#$*")
    assert unescape(enc) == raw


def test_unescape_dangling_escape() -> None:
    with pytest.raises(FramingError):
        unescape(b"abc}")


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"0* ", b"0000"),  # ' ' = 32 -> 3 more
        (b"ab*!", b"abbbbb"),  # '!' = 33 -> 4 more
        (b"x*\x1d", b"x"),  # count 0
        (b'12*"3', b"12222223"),  # '"' = 34 -> 5 more
        (b"no runs", b"no runs"),
        (b"0*\x7e", b"0" * (1 + 0x7E - 29)),
    ],
)
def test_rle_decode(encoded: bytes, decoded: bytes) -> None:
    assert rle_decode(encoded) == decoded


@pytest.mark.parametrize("bad", [b"*!", b"abc*", b"a*\x1c"])
def test_rle_decode_malformed(bad: bytes) -> None:
    with pytest.raises(FramingError):
        rle_decode(bad)


def test_hexlify() -> None:
    assert hexlify(b"\x00\xab\xff") == b"00abff"


# --- the reader ----------------------------------------------------------------------------


def test_reader_single_packet() -> None:
    assert PacketReader().feed(b"$g#67") == [Packet(b"g")]


def test_reader_acks_and_interrupts() -> None:
    events = PacketReader().feed(b"+-\x03+")
    assert events == [Ack(), Nak(), Interrupt(), Ack()]


def test_reader_bad_checksum() -> None:
    assert PacketReader().feed(b"$g#00") == [Packet(b"g", checksum_ok=False)]


def test_reader_non_hex_checksum() -> None:
    assert PacketReader().feed(b"$g#zz") == [Packet(b"g", checksum_ok=False)]


def test_reader_uppercase_checksum_accepted() -> None:
    assert PacketReader().feed(b"$OK#9A") == [Packet(b"OK")]


def test_reader_byte_at_a_time() -> None:
    reader = PacketReader()
    events = []
    for b in frame(b"qSupported:swbreak+") + b"+" + frame(b"?"):
        events += reader.feed(bytes([b]))
    assert events == [Packet(b"qSupported:swbreak+"), Ack(), Packet(b"?")]


def test_reader_skips_garbage_between_packets() -> None:
    reader = PacketReader()
    events = reader.feed(b"hello\r\n" + frame(b"g") + b"\x00\xff#junk" + frame(b"?"))
    assert events == [Packet(b"g"), Packet(b"?")]
    assert reader.garbage == len(b"hello\r\n") + len(b"\x00\xff#junk")


def test_reader_dollar_restarts_packet() -> None:
    # A raw '$' cannot be inside a payload, so it starts a new packet.
    assert PacketReader().feed(b"$m10" + frame(b"g")) == [Packet(b"g")]


def test_reader_interrupt_inside_packet_is_data() -> None:
    assert PacketReader().feed(frame(b"X0,1:\x03")) == [Packet(b"X0,1:\x03")]


def test_reader_interrupt_between_packets() -> None:
    events = PacketReader().feed(frame(b"c") + b"\x03" + frame(b"?"))
    assert events == [Packet(b"c"), Interrupt(), Packet(b"?")]


def test_reader_decodes_run_length() -> None:
    assert PacketReader().feed(frame(b"M0,4:0* ")) == [Packet(b"M0,4:0000")]


def test_reader_malformed_run_length() -> None:
    [event] = PacketReader().feed(frame(b"*x"))
    assert isinstance(event, Packet) and event.malformed and event.checksum_ok


def test_reader_escaped_bytes_pass_through() -> None:
    # Escapes are left for the packets that carry binary data.
    assert PacketReader().feed(frame(b"X0,1:}]")) == [Packet(b"X0,1:}]")]


def test_reader_oversized_packet_dropped() -> None:
    reader = PacketReader(max_packet=16)
    events = reader.feed(b"$" + b"a" * 100 + b"#00" + frame(b"g"))
    assert events == [Packet(b"g")]


def test_reader_in_packet() -> None:
    reader = PacketReader()
    reader.feed(b"$ab")
    assert reader.in_packet
    reader.feed(b"#c3")
    assert not reader.in_packet
