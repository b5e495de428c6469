"""GDB remote protocol commands: a declarative table from packet prefix to handler.

:class:`GdbCommands` turns one decoded packet payload into a :class:`Response` - the
packets to send back, plus what the connection should do next (resume the target, leave
ack mode, close). It never touches a socket and never raises: a malformed packet gets
``E01``, a :class:`~rrvmm.target.TargetError` ``E03``, an unknown packet the
empty reply, as the protocol asks.

Each row of :data:`COMMANDS` names a packet, the handler method and a small argument
schema (after QEMU's ``GdbCmdParseEntry``), so a handler receives parsed values:

* ``x`` a hex number, ``t`` a thread id (hex, ``0`` or ``-1``);
* ``h`` hex-encoded bytes, ``b`` binary-escaped bytes, ``s`` text - each takes the rest;
* any other character must appear literally;
* ``?`` after an item makes it and the rest of the schema optional;
* ``*`` at the end ignores whatever follows (e.g. ``Z`` condition lists).

Error replies: ``E00`` bad qXfer annex, ``E01`` malformed packet or arguments (including an
address range past 2^64 or a watchpoint over MAX_WATCH_LENGTH bytes), ``E02`` no such
register or thread, ``E03`` the target refused (read-only replay, unmapped or non-canonical
memory, too many points, a damaged trace met while running: logged as one line), ``E04``
the target raised something unexpected (logged with its traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rrvmm.errors import RrvmmError
from rrvmm.gdbstub import regs
from rrvmm.gdbstub.framing import FramingError, escape, hexlify, unescape
from rrvmm.target import Stop, StopKind, Target, TargetError, WatchKind

__all__ = [
    "Command",
    "COMMANDS",
    "Resume",
    "Response",
    "GdbCommands",
    "PACKET_SIZE",
    "SIGTRAP",
    "SIGINT",
]

log = logging.getLogger("rrvmm.gdbstub")

PACKET_SIZE = 0x4000  # what we accept, advertised in qSupported
THREAD_ID = 1
SIGINT = 2
SIGTRAP = 5
PAGE = 4096

OK = b"OK"
E_ANNEX = b"E00"
E_ARGS = b"E01"
E_NOENT = b"E02"
E_TARGET = b"E03"
E_INTERNAL = b"E04"

# Bounds on what one packet can make the stub (and the target behind it) hold or walk.
ADDRESS_LIMIT = 1 << 64  # x86-64 addresses; gdb may still send larger hex numbers
MAX_WATCH_LENGTH = 1 << 20  # bytes one watchpoint covers (the target protects its pages)
MAX_WATCHED = 16 << 20  # bytes all watchpoints together cover
MAX_POINTS = 4096  # distinct break/watch points at once
MAX_MONITOR_COMMAND = 1024  # characters of a `monitor` command (they are a few words)

_WATCH_KINDS = {2: WatchKind.WRITE, 3: WatchKind.READ, 4: WatchKind.ACCESS}
_WATCH_REASON = {WatchKind.WRITE: b"watch", WatchKind.READ: b"rwatch", WatchKind.ACCESS: b"awatch"}

QSUPPORTED = (
    f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;QStartNoAckMode+;"
    "ReverseStep+;ReverseContinue+;swbreak+;hwbreak+;vContSupported+"
).encode("ascii")


# Refusals gdb shows the text of (``E.text``, which gdb has always taken as an error): a
# register write says "Could not write register ...; remote failure reply 'E.a replay is
# read-only...'". Other refusals stay E03 (gdb words those itself, e.g. a read of an
# unmapped address is "Cannot access memory at address ...").
_SAYS_WHY = frozenset({"write_registers", "write_register", "write_memory", "write_memory_binary"})


def error_text(message: str) -> bytes:
    """``E.message`` with the characters framing would need escaped replaced."""
    text = "".join(c if c.isprintable() and c not in "#$}*" else " " for c in message)
    return b"E." + text.encode("ascii", "replace")[:200]


_NO_HISTORY = Stop(StopKind.REPLAY_BEGIN)


class ArgError(ValueError):
    """The packet's arguments do not fit its schema."""


class Resume(NamedTuple):
    reverse: bool = False
    step: bool = False


@dataclass
class Response:
    """What to do with one packet."""

    packets: list[bytes] = field(default_factory=list)  # payloads to send, in order
    resume: Resume | None = None  # then run the target and send a stop reply
    no_ack: bool = False  # leave ack mode after sending ``packets``
    close: bool = False  # close the connection after sending ``packets``


@dataclass(frozen=True)
class Command:
    name: bytes  # the packet starts with this
    handler: str  # method of GdbCommands
    schema: str = ""  # arguments after ``name`` (see the module docstring)


# The table. Matched longest name first; a multi-letter name must be followed by the end
# of the packet or one of ':', ';', ',' (so 'qC' does not swallow 'qCRC:...').
COMMANDS: tuple[Command, ...] = (
    # queries and modes
    Command(b"qSupported", "q_supported", ":?s"),
    Command(b"QStartNoAckMode", "q_start_no_ack_mode"),
    Command(b"qXfer:features:read:", "q_xfer_features", "s"),
    Command(b"qfThreadInfo", "q_f_thread_info"),
    Command(b"qsThreadInfo", "q_s_thread_info"),
    Command(b"qC", "q_current_thread"),
    Command(b"qAttached", "q_attached", "*"),
    Command(b"qTStatus", "q_t_status"),
    Command(b"qOffsets", "q_offsets"),
    Command(b"qRcmd,", "q_rcmd", "h"),
    Command(b"vMustReplyEmpty", "v_must_reply_empty"),
    Command(b"vCont?", "v_cont_query"),
    Command(b"vCont;", "v_cont", "s"),
    Command(b"H", "set_thread", "s"),
    Command(b"T", "thread_alive", "t"),
    Command(b"?", "stop_reason"),
    # registers and memory
    Command(b"g", "read_registers"),
    Command(b"G", "write_registers", "h"),
    Command(b"p", "read_register", "x"),
    Command(b"P", "write_register", "x=h"),
    Command(b"m", "read_memory", "x,x"),
    Command(b"M", "write_memory", "x,x:h"),
    Command(b"X", "write_memory_binary", "x,x:b"),
    # execution
    Command(b"c", "cont", "x?"),
    Command(b"C", "cont_signal", "x;?x"),
    Command(b"s", "step", "x?"),
    Command(b"S", "step_signal", "x;?x"),
    Command(b"bc", "reverse_cont"),
    Command(b"bs", "reverse_step"),
    # break and watch points
    Command(b"Z", "insert_point", "x,x,x*"),
    Command(b"z", "remove_point", "x,x,x*"),
    # session
    Command(b"D", "detach", "*"),
    Command(b"k", "kill"),
)

_BY_LENGTH = sorted(COMMANDS, key=lambda c: len(c.name), reverse=True)
_SEPARATORS = b":;,"


def find_command(payload: bytes) -> tuple[Command, bytes] | None:
    """The table row for ``payload`` and the argument bytes after its name."""
    for cmd in _BY_LENGTH:
        name = cmd.name
        if not payload.startswith(name):
            continue
        rest = payload[len(name) :]
        if len(name) > 1 and rest and name[-1] not in _SEPARATORS:
            if rest[0] not in _SEPARATORS:
                continue
        return cmd, rest
    return None


# --- argument parsing ----------------------------------------------------------------------

_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def _hex_int(text: bytes) -> int:
    if not text or not all(c in _HEXDIGITS for c in text):
        raise ArgError(f"not a hex number: {text[:40]!r}")
    return int(text, 16)


def _thread_id(text: bytes) -> int:
    if text == b"-1":
        return -1
    return _hex_int(text)


def _hex_bytes(text: bytes) -> bytes:
    if len(text) % 2 or not all(c in _HEXDIGITS for c in text):
        raise ArgError(f"not hex bytes: {text[:40]!r}")
    return bytes.fromhex(text.decode("ascii"))


def parse_args(schema: str, data: bytes) -> list[Any]:
    """Parse ``data`` by ``schema`` (see the module docstring); ArgError if it does not fit."""
    out: list[Any] = []
    pos = 0
    i = 0
    n = len(schema)
    while i < n:
        item = schema[i]
        optional = i + 1 < n and schema[i + 1] == "?"
        if optional and pos >= len(data):
            return out
        if item == "*":
            return out
        if item in "xt":
            end = pos
            while end < len(data) and data[end] not in b",:;=":
                end += 1
            token = data[pos:end]
            out.append(_hex_int(token) if item == "x" else _thread_id(token))
            pos = end
        elif item == "h":
            out.append(_hex_bytes(data[pos:]))
            pos = len(data)
        elif item == "b":
            try:
                out.append(unescape(data[pos:]))
            except FramingError as exc:
                raise ArgError(str(exc)) from exc
            pos = len(data)
        elif item == "s":
            out.append(data[pos:])
            pos = len(data)
        else:
            if pos >= len(data) or data[pos] != ord(item):
                raise ArgError(f"expected {item!r} at {pos} in {data[:40]!r}")
            pos += 1
        i += 2 if optional else 1
    if pos != len(data):
        raise ArgError(f"trailing bytes: {data[pos : pos + 40]!r}")
    return out


# --- the command layer ---------------------------------------------------------------------


class GdbCommands:
    """One debugging session's packet handlers over a :class:`Target`.

    ``dispatch(payload)`` is the whole interface for the server; ``handle(payload)`` also
    runs any resume synchronously and is what the tests use.
    """

    def __init__(self, target: Target, *, packet_size: int = PACKET_SIZE) -> None:
        self.target = target
        self.packet_size = packet_size
        self.last_stop: Stop = Stop(StopKind.STEP)  # what '?' reports before any resume
        self.client_features: set[bytes] = set()  # 'swbreak' etc. from gdb's qSupported
        self.no_ack = False
        self._points: set[tuple[int, int, int]] = set()  # (kind, address, length) inserted
        self._notes: list[bytes] = []  # see take_notes

    # -- entry points ---------------------------------------------------------------------

    def dispatch(self, payload: bytes) -> Response:
        """The response to one (run-length decoded) packet payload. Never raises."""
        found = find_command(payload)
        if found is None:
            log.debug("unsupported packet %r", payload[:80])
            return Response([b""])
        cmd, rest = found
        try:
            args = parse_args(cmd.schema, rest)
            result = getattr(self, cmd.handler)(*args)
        except ArgError as exc:
            log.debug("bad arguments in %r: %s", payload[:80], exc)
            return Response([E_ARGS])
        except TargetError as exc:
            log.debug("target refused %r: %s", payload[:80], exc)
            if cmd.handler in _SAYS_WHY:
                return Response([error_text(str(exc))])
            return Response([E_TARGET])
        except Exception:
            log.exception("handler %s failed on %r", cmd.handler, payload[:80])
            return Response([E_INTERNAL])
        if isinstance(result, Response):
            return result
        return Response([result])

    def handle(self, payload: bytes) -> list[bytes]:
        """``dispatch`` plus a synchronous resume: every payload gdb would receive."""
        resp = self.dispatch(payload)
        out = list(resp.packets)
        if resp.resume is not None:
            reply = self.run(resp.resume)
            out += self.take_notes()
            out.append(reply)
        return out

    def take_notes(self) -> list[bytes]:
        """``O`` packets (console output) to send before the last resume's stop reply: why
        it failed, so the gdb user reads more than "Remote failure reply: E03"."""
        notes, self._notes = self._notes, []
        return notes

    def run(self, resume: Resume) -> bytes:
        """Resume the target (blocking) and return the stop reply."""
        try:
            stop = self.target.resume(reverse=resume.reverse, step=resume.step)
        except TargetError as exc:
            log.warning("resume failed: %s", exc)
            return E_TARGET  # gdb warns "Remote failure reply" and treats it as a stop
        except RrvmmError as exc:  # e.g. a damaged trace met while running: one line
            log.error("%s", exc)
            self._notes.append(b"O" + hexlify(f"rrvmm: {exc}\n".encode()))
            return E_TARGET
        except Exception:
            log.exception("resume failed")
            return E_INTERNAL
        return self.record_stop(stop)

    def record_stop(self, stop: Stop) -> bytes:
        """Remember ``stop`` for '?' and return its stop reply."""
        self.last_stop = stop
        return self.stop_reply(stop)

    # -- stop replies ---------------------------------------------------------------------

    def stop_reply(self, stop: Stop) -> bytes:
        """``T05thread:1;10:<pc>;swbreak:;`` and friends; ``W<status>`` for an exit."""
        if stop.kind is StopKind.EXITED:
            return b"W%02x" % (stop.status & 0xFF)
        signal = SIGINT if stop.kind is StopKind.INTERRUPTED else SIGTRAP
        parts = [b"T%02x" % signal]
        reason = self._stop_reason(stop)
        if reason:
            parts.append(reason)
        parts.append(b"thread:%x;" % THREAD_ID)
        try:
            pc = self.target.read_registers().get("rip", 0)
        except Exception as exc:  # the reply is still good without the pc
            log.debug("no pc for the stop reply: %s", exc)
        else:
            parts.append(b"%02x:%s;" % (regs.PC_REGNUM, regs.encode_register(regs.PC_REGNUM, pc)))
        return b"".join(parts)

    def _stop_reason(self, stop: Stop) -> bytes:
        kind = stop.kind
        if kind is StopKind.BREAKPOINT:
            feature = b"hwbreak" if stop.hardware else b"swbreak"
            return feature + b":;" if feature in self.client_features else b""
        if kind is StopKind.WATCHPOINT:
            name = _WATCH_REASON[stop.watch or WatchKind.WRITE]
            return b"%s:%x;" % (name, stop.address)
        if kind is StopKind.REPLAY_BEGIN:
            return b"replaylog:begin;"
        if kind is StopKind.REPLAY_END:
            return b"replaylog:end;"
        return b""

    # -- queries and modes ----------------------------------------------------------------

    def q_supported(self, features: bytes = b"") -> bytes:
        self.client_features = {
            f[:-1] for f in features.split(b";") if f.endswith(b"+") and len(f) > 1
        }
        return QSUPPORTED

    def q_start_no_ack_mode(self) -> Response:
        self.no_ack = True
        return Response([OK], no_ack=True)

    def q_xfer_features(self, args: bytes) -> bytes:
        annex, sep, span = args.rpartition(b":")
        if not sep:
            raise ArgError("qXfer needs annex:offset,length")
        offset, length = parse_args("x,x", span)
        doc = regs.XML_FILES.get(annex.decode("ascii", "replace"))
        if doc is None:
            return E_ANNEX
        if offset > len(doc):
            return E_ARGS
        room = self.packet_size - 8  # the 'm'/'l' and the frame
        chunk = doc[offset : offset + min(length, room)]
        data = escape(chunk)
        if len(data) > room:  # escaping grew it: fall back to the worst case
            chunk = chunk[: room // 2]
            data = escape(chunk)
        more = offset + len(chunk) < len(doc)
        return (b"m" if more else b"l") + data

    def q_f_thread_info(self) -> bytes:
        return b"m%x" % THREAD_ID

    def q_s_thread_info(self) -> bytes:
        return b"l"

    def q_current_thread(self) -> bytes:
        return b"QC%x" % THREAD_ID

    def q_attached(self) -> bytes:
        return b"1"

    def q_t_status(self) -> bytes:
        return b""  # no tracepoints

    def q_offsets(self) -> bytes:
        return b""  # the kernel is loaded where its ELF says

    def q_rcmd(self, command: bytes) -> Response:
        text = command.decode("utf-8", "replace")
        try:
            if len(text) > MAX_MONITOR_COMMAND:
                raise TargetError(f"monitor command longer than {MAX_MONITOR_COMMAND} characters")
            output = self.target.monitor(text)
        except TargetError as exc:
            output = f"error: {exc}\n"
        data = output.encode("utf-8", "replace")
        chunk = max(1, (self.packet_size - 8) // 2)
        packets = [b"O" + hexlify(data[i : i + chunk]) for i in range(0, len(data), chunk)]
        packets.append(OK)
        return Response(packets)

    def v_must_reply_empty(self) -> bytes:
        return b""

    def v_cont_query(self) -> bytes:
        return b"vCont;c;C;s;S"

    def v_cont(self, actions: bytes) -> Response:
        for action in actions.split(b";"):
            verb, _, tid = action.partition(b":")
            if tid and _thread_id(tid) not in (-1, 0, THREAD_ID):
                continue  # for some other thread
            if verb[:1] in (b"c", b"s") and len(verb) == 1:
                pass
            elif verb[:1] in (b"C", b"S") and len(verb) == 3:
                _hex_int(verb[1:])  # the signal is ignored: a replay cannot deliver one
            else:
                raise ArgError(f"unsupported vCont action {action!r}")
            return Response(resume=Resume(step=verb[:1] in (b"s", b"S")))
        raise ArgError(f"no vCont action for thread {THREAD_ID}: {actions!r}")

    def set_thread(self, arg: bytes) -> bytes:
        op, tid = arg[:1], arg[1:]
        if op not in (b"g", b"c", b"G", b"C") or not tid:
            raise ArgError(f"bad H packet {arg!r}")
        return OK if _thread_id(tid) in (-1, 0, THREAD_ID) else E_NOENT

    def thread_alive(self, tid: int) -> bytes:
        return OK if tid == THREAD_ID else E_NOENT

    def stop_reason(self) -> bytes:
        return self.stop_reply(self.last_stop)

    # -- registers and memory -------------------------------------------------------------

    def read_registers(self) -> bytes:
        return regs.encode_registers(self.target.read_registers())

    def write_registers(self, data: bytes) -> bytes:
        try:
            values = regs.decode_registers(hexlify(data))
        except ValueError as exc:
            raise ArgError(str(exc)) from exc
        self._write_changed(values)
        return OK

    def read_register(self, index: int) -> bytes:
        if index >= len(regs.REGISTERS):
            return E_NOENT
        value = self.target.read_registers().get(regs.REGISTERS[index].name, 0)
        return regs.encode_register(index, value)

    def write_register(self, index: int, data: bytes) -> bytes:
        if index >= len(regs.REGISTERS):
            return E_NOENT
        try:
            value = regs.decode_register(index, hexlify(data))
        except ValueError as exc:
            raise ArgError(str(exc)) from exc
        self._write_changed({regs.REGISTERS[index].name: value})
        return OK

    def _write_changed(self, values: dict[str, int]) -> None:
        """Write only what differs, so a ``G`` echoing the registers works when read-only."""
        current = self.target.read_registers()
        for name, value in values.items():
            bits = regs.REGISTERS[regs.REGISTER_INDEX[name]].bitsize
            if value != current.get(name, 0) & ((1 << bits) - 1):
                if name not in current:
                    raise TargetError(f"{name} is not writable here")
                self.target.write_register(name, value)

    @staticmethod
    def _check_range(address: int, length: int) -> None:
        if address >= ADDRESS_LIMIT or length > ADDRESS_LIMIT - address:
            raise ArgError(f"{address:#x}+{length:#x} is beyond the 64-bit address space")

    def read_memory(self, address: int, length: int) -> bytes:
        length = min(length, (self.packet_size - 8) // 2)
        self._check_range(address, length)
        if length == 0:
            return b""
        try:
            data = self.target.read_memory(address, length)
        except TargetError:
            # Give what lies before the first page boundary, so a read running into an
            # unmapped page still returns its mapped head (gdb accepts short reads).
            head = PAGE - (address % PAGE)
            if head >= length:
                raise
            data = self.target.read_memory(address, head)
        return hexlify(bytes(data[:length]))

    def write_memory(self, address: int, length: int, data: bytes) -> bytes:
        if len(data) != length:
            raise ArgError(f"M says {length} bytes, carries {len(data)}")
        self._check_range(address, length)
        if length:
            self.target.write_memory(address, data)
        return OK

    def write_memory_binary(self, address: int, length: int, data: bytes) -> bytes:
        # 'X addr,0:' is gdb probing for binary downloads: always OK.
        return self.write_memory(address, length, data)

    # -- execution ------------------------------------------------------------------------

    @staticmethod
    def _no_address(address: int | None) -> None:
        if address is not None:
            raise TargetError("a replay cannot resume at another address")

    def cont(self, address: int | None = None) -> Response:
        self._no_address(address)
        return Response(resume=Resume())

    def cont_signal(self, _signal: int, address: int | None = None) -> Response:
        return self.cont(address)

    def step(self, address: int | None = None) -> Response:
        self._no_address(address)
        return Response(resume=Resume(step=True))

    def step_signal(self, _signal: int, address: int | None = None) -> Response:
        return self.step(address)

    def reverse_cont(self) -> Response:
        if not getattr(self.target, "can_reverse", True):
            return self._no_reverse()
        return Response(resume=Resume(reverse=True))

    def reverse_step(self) -> Response:
        if not getattr(self.target, "can_reverse", True):
            return self._no_reverse()
        return Response(resume=Resume(reverse=True, step=True))

    def _no_reverse(self) -> Response:
        """A live target cannot go back: say why (console output), then stop where it is."""
        text = (
            "rrvmm: reverse execution needs a recording: `rrvmm record`, then"
            " `rrvmm replay --gdb`\n"
        )
        # "replaylog:begin": gdb says "No more reverse-execution history" and stays here
        return Response([b"O" + hexlify(text.encode()), self.stop_reply(_NO_HISTORY)])

    # -- break and watch points -----------------------------------------------------------

    def _point(self, kind: int, address: int, length: int, insert: bool) -> bytes:
        target = self.target
        self._check_range(address, length if kind in _WATCH_KINDS else 1)
        key = (kind, address, length)
        if insert and key in self._points:
            return OK  # inserting twice is one point (gdb re-inserts after reconnecting)
        if insert and len(self._points) >= MAX_POINTS:
            raise TargetError(f"more than {MAX_POINTS} break/watch points")
        if kind in _WATCH_KINDS and length > MAX_WATCH_LENGTH:
            raise ArgError(f"watchpoint of {length} bytes (at most {MAX_WATCH_LENGTH})")
        if insert and kind in _WATCH_KINDS and self._watched() + length > MAX_WATCHED:
            raise TargetError(f"watchpoints would cover more than {MAX_WATCHED} bytes")
        if kind in (0, 1):
            op: Callable[..., None] = target.add_breakpoint if insert else target.remove_breakpoint
            op(address, hardware=kind == 1)
        elif kind in _WATCH_KINDS:
            if length == 0:
                raise ArgError("zero-length watchpoint")
            op = target.add_watchpoint if insert else target.remove_watchpoint
            op(address, length, _WATCH_KINDS[kind])
        else:
            return b""  # unknown kinds are 'not supported', per the spec
        if insert:
            self._points.add(key)
        else:
            self._points.discard(key)
        return OK

    def _watched(self) -> int:
        return sum(length for kind, _, length in self._points if kind in _WATCH_KINDS)

    def insert_point(self, kind: int, address: int, length: int) -> bytes:
        return self._point(kind, address, length, insert=True)

    def remove_point(self, kind: int, address: int, length: int) -> bytes:
        return self._point(kind, address, length, insert=False)

    # -- session --------------------------------------------------------------------------

    def detach(self) -> Response:
        return Response([OK], close=True)

    def kill(self) -> Response:
        kill = getattr(self.target, "kill", None)  # a live guest ends; a replay just closes
        if kill is not None:
            kill()
        return Response(close=True)
