"""GDB remote serial protocol framing: ``$payload#cs`` packets, acks, escapes and run lengths.

Everything here is a pure function of bytes except :class:`PacketReader`, a small state
machine that turns a raw byte stream into events. Nothing in this module touches a socket
or a target, so the whole of it is testable on literals.

Wire format (GDB manual, "Overview" and "Binary Data"):

* a packet is ``$`` payload ``#`` two lowercase hex digits, the sum of the payload bytes as
  sent, modulo 256;
* ``+`` and ``-`` acknowledge a packet (until no-ack mode), ``0x03`` outside a packet asks
  the running target to stop;
* in binary data ``#``, ``$``, ``}`` and ``*`` are sent as ``}`` followed by the byte
  XOR 0x20;
* ``X*N`` repeats ``X`` ``ord(N) - 29`` more times (run-length encoding).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACK",
    "NAK",
    "INTERRUPT",
    "FramingError",
    "checksum",
    "escape",
    "unescape",
    "rle_decode",
    "frame",
    "hexlify",
    "Packet",
    "Ack",
    "Nak",
    "Interrupt",
    "Event",
    "PacketReader",
    "MAX_PACKET",
]

ACK = b"+"
NAK = b"-"
INTERRUPT = 0x03
_ESCAPE = 0x7D  # '}'
_ESCAPED = frozenset(b"#$}*")
_RLE_BASE = 29

# A packet longer than this without its '#' is treated as garbage and dropped.
MAX_PACKET = 1 << 20


class FramingError(ValueError):
    """Bytes that do not decode (a dangling escape, a run length with nothing to repeat)."""


def checksum(payload: bytes) -> int:
    """The packet checksum: the sum of the payload bytes modulo 256."""
    return sum(payload) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary-escape ``#``, ``$``, ``}`` and ``*`` as ``}`` + (byte ^ 0x20)."""
    if not any(b in _ESCAPED for b in data):
        return bytes(data)
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out.append(_ESCAPE)
            out.append(b ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape`; a ``}`` at the very end raises :class:`FramingError`."""
    if _ESCAPE not in data:
        return bytes(data)
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == _ESCAPE:
            nxt = next(it, None)
            if nxt is None:
                raise FramingError("escape character at end of data")
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def rle_decode(data: bytes, limit: int | None = None) -> bytes:
    """Expand ``X*N`` runs (``X`` repeated ``ord(N) - 29`` more times).

    Works on the payload as sent (before binary unescaping), as gdb itself does. Output
    beyond ``limit`` bytes is a FramingError (runs expand ~48 times: a hostile packet).
    """
    if b"*" not in data:
        return bytes(data)
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == 0x2A:  # '*'
            if not out:
                raise FramingError("run length with nothing to repeat")
            if i + 1 >= n:
                raise FramingError("run length without a count")
            count = data[i + 1] - _RLE_BASE
            if count < 0:
                raise FramingError(f"bad run length count byte {data[i + 1]:#04x}")
            out.extend(out[-1:] * count)
            if limit is not None and len(out) > limit:
                raise FramingError(f"run lengths expand the packet past {limit} bytes")
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """``$payload#cs`` (the payload must already be escaped where that applies)."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def hexlify(data: bytes) -> bytes:
    """Lowercase hex, as the protocol prefers."""
    return data.hex().encode("ascii")


@dataclass(frozen=True)
class Packet:
    """A complete ``$...#cs`` packet.

    ``payload`` is run-length decoded but not binary-unescaped (only some packets carry
    binary data). ``checksum_ok`` says whether the checksum matched; ``malformed`` that
    the run-length encoding could not be decoded (``payload`` is then the raw bytes).
    """

    payload: bytes
    checksum_ok: bool = True
    malformed: bool = False


@dataclass(frozen=True)
class Ack:
    """A ``+``."""


@dataclass(frozen=True)
class Nak:
    """A ``-``: the peer asks for the last packet again."""


@dataclass(frozen=True)
class Interrupt:
    """A 0x03 (Ctrl-C) outside any packet."""


Event = Packet | Ack | Nak | Interrupt

_HEX = frozenset(b"0123456789abcdefABCDEF")

_IDLE, _BODY, _CS1, _CS2 = range(4)


class PacketReader:
    """Incremental parser: feed raw bytes, get :data:`Event` values.

    Bytes outside a packet that are not ``+``, ``-`` or 0x03 are garbage and skipped. A
    ``$`` inside a packet starts a new packet (the unfinished one is dropped: a real
    ``$`` in a payload is always escaped). Checksums with non-hex digits are reported as
    bad checksums rather than dropped, so the sender gets its ``-`` and can retransmit.
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._max = max_packet
        self._state = _IDLE
        self._body = bytearray()
        self._cs = bytearray()
        self.garbage = 0  # bytes skipped so far (for logs and tests)

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it completes, in order."""
        events: list[Event] = []
        for b in data:
            state = self._state
            if state == _IDLE:
                if b == 0x24:  # '$'
                    self._start()
                elif b == 0x2B:  # '+'
                    events.append(Ack())
                elif b == 0x2D:  # '-'
                    events.append(Nak())
                elif b == INTERRUPT:
                    events.append(Interrupt())
                else:
                    self.garbage += 1
            elif state == _BODY:
                if b == 0x23:  # '#'
                    self._state = _CS1
                elif b == 0x24:  # '$': restart
                    self.garbage += 1 + len(self._body)
                    self._start()
                elif len(self._body) >= self._max:
                    self.garbage += 1 + len(self._body)
                    self._reset()
                else:
                    self._body.append(b)
            else:  # _CS1 / _CS2
                self._cs.append(b)
                if state == _CS1:
                    self._state = _CS2
                else:
                    events.append(self._finish())
                    self._reset()
        return events

    @property
    def in_packet(self) -> bool:
        """True while a packet has started but not ended."""
        return self._state != _IDLE

    def _start(self) -> None:
        self._state = _BODY
        self._body.clear()
        self._cs.clear()

    def _reset(self) -> None:
        self._state = _IDLE
        self._body.clear()
        self._cs.clear()

    def _finish(self) -> Packet:
        raw = bytes(self._body)
        cs = bytes(self._cs)
        ok = all(c in _HEX for c in cs) and int(cs, 16) == checksum(raw)
        try:
            payload = rle_decode(raw, self._max)
        except FramingError:
            return Packet(raw, ok, malformed=True)
        return Packet(payload, ok)
