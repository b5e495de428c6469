"""The replay console's commands: the table, parsing and formatting, with no terminal I/O.

:class:`Console` turns one command line into the text to show (``execute``), the bottom
toolbar's text (``status``) and completions (``complete``). It drives the replay only
through ``rrvmm.target.ReplayTarget`` (the ``Target`` the gdb stub drives, plus the
recording's exits and serial output): stepping, running and going back are the target's.

Errors the user can make (unknown command, bad number, unknown symbol, unreadable
memory) come back as one line of text; the console goes on.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rrvmm.console.disasm import Instruction, disassemble, format_instruction
from rrvmm.console.symbols import FUNCTION, LABEL, OBJECT, Symbol, SymbolTable
from rrvmm.target import (
    REGISTER_NAMES,
    Position,
    RecordedExit,
    ReplayTarget,
    Stop,
    StopKind,
    TargetDiverged,
    TargetError,
    WatchKind,
)

__all__ = ["Console", "ConsoleError", "ConsoleQuit", "Command", "COMMANDS", "PROMPT"]

PROMPT = "(rrvmm) "
MASK64 = (1 << 64) - 1
MAX_X_BYTES = 64 * 1024
MAX_DISAS = 2000
DISAS_DEFAULT = 10
EXITS_DEFAULT = 20

T = TypeVar("T")
# runs a motion (the function) and, on Ctrl-C, calls the second function to stop it
Runner = Callable[[Callable[[], Any], Callable[[], None]], Any]


class ConsoleError(Exception):
    """A mistake in a command: shown as one line, the console goes on."""


class ConsoleQuit(Exception):
    """``quit``: leave the console."""


@dataclass
class Command:
    name: str
    aliases: tuple[str, ...]
    usage: str
    summary: str
    handler: str  # the Console method
    complete: str | None = None  # functions, objects, symbols, commands, info, monitor
    repeat: bool = False  # an empty line repeats it, as in gdb
    details: str = ""


COMMANDS: tuple[Command, ...] = (
    Command("next-exit", ("ne",), "next-exit [N]", "go forward to the next VM exit (N exits)",
            "_cmd_next_exit", repeat=True,
            details="Lands just after the exit, before the guest resumes. Ignores"
            " breakpoints (use continue for those)."),
    Command("prev-exit", ("pe",), "prev-exit [N]", "go back to the previous VM exit (N exits)",
            "_cmd_prev_exit", repeat=True,
            details="From inside an exit interval the previous exit is the one that began"
            " it; from just after exit K it is exit K-1."),
    Command("stepi", ("si",), "stepi [N]", "execute one instruction (N instructions)",
            "_cmd_stepi", repeat=True),
    Command("rstepi", ("rsi", "reverse-stepi"), "rstepi [N]",
            "step back one instruction (N instructions)", "_cmd_rstepi", repeat=True),
    Command("continue", ("c", "cont"), "continue",
            "run to a breakpoint, watchpoint or the end of the recording",
            "_cmd_continue"),
    Command("rcontinue", ("rc", "reverse-continue"), "rcontinue",
            "run back to a breakpoint, watchpoint or the start",
            "_cmd_rcontinue"),
    Command("goto", (), "goto EXIT [INSNS]",
            "go to just after exit EXIT (and INSNS instructions further)", "_cmd_goto"),
    Command("break", ("b", "br"), "break ADDR|SYMBOL", "set a breakpoint", "_cmd_break",
            complete="functions",
            details="ADDR is a number (0x101ce2), SYMBOL[+OFF], *ADDR or $register."),
    Command("watch", (), "watch ADDR|SYMBOL [LEN]", "stop when the guest writes there",
            "_cmd_watch", complete="objects",
            details="LEN defaults to the symbol's size (8 for a bare address). Going"
            " backward, a watchpoint stops at the instruction that accesses the data,"
            " before the access."),
    Command("rwatch", (), "rwatch ADDR|SYMBOL [LEN]", "stop when the guest reads there",
            "_cmd_rwatch", complete="objects"),
    Command("awatch", (), "awatch ADDR|SYMBOL [LEN]",
            "stop when the guest reads or writes there", "_cmd_awatch", complete="objects"),
    Command("delete", ("d",), "delete [N...]",
            "delete breakpoints/watchpoints (all without N)", "_cmd_delete"),
    Command("info", ("i",), "info [TOPIC]",
            "position, breakpoints and checkpoints", "_cmd_info", complete="info",
            details="TOPIC: breakpoints (or watchpoints), position, registers [NAME...],"
            " symbol ADDR, checkpoints. Without one: position, breakpoints and the replay"
            " engine's checkpoints."),
    Command("regs", ("registers",), "regs [NAME...]",
            "registers, segments and control registers", "_cmd_regs", complete="registers"),
    Command("x", (), "x[/NFMT] ADDR [N]",
            "examine N 8-byte words of memory (as gdb's x/Ngx)", "_cmd_x", complete="symbols",
            details="FMT: size b, h, w or g (default g) and format x, d or u (default x)."),
    Command("disas", ("disassemble",), "disas [ADDR|SYMBOL] [N]",
            "disassemble (default: the function at RIP)", "_cmd_disas",
            complete="functions"),
    Command("exits", (), "exits [FROM [N]]",
            "list N recorded exits from exit FROM (default: from here)", "_cmd_exits"),
    Command("serial", (), "serial [LINES]", "the guest's serial output up to here",
            "_cmd_serial"),
    Command("monitor", (), "monitor CMD", "a replay monitor command (as gdb's monitor)",
            "_cmd_monitor", complete="monitor"),
    Command("help", ("h",), "help [COMMAND]", "list the commands, or explain one",
            "_cmd_help", complete="commands"),
    Command("quit", ("q",), "quit", "leave the console", "_cmd_quit"),
)  # fmt: skip

_BY_NAME: dict[str, Command] = {}
for _c in COMMANDS:
    for _n in (_c.name, *_c.aliases):
        _BY_NAME[_n] = _c

INFO_TOPICS = ("breakpoints", "watchpoints", "position", "registers", "symbol", "checkpoints")
MONITOR_COMMANDS = ("info", "exits", "goto", "checkpoint", "help")

# fmt: off
_EFLAGS = [(0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
           (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (21, "ID")]
_CR0 = [(31, "PG"), (30, "CD"), (29, "NW"), (18, "AM"), (16, "WP"), (5, "NE"), (4, "ET"),
        (3, "TS"), (2, "EM"), (1, "MP"), (0, "PE")]
_CR4 = [(22, "PKE"), (21, "SMAP"), (20, "SMEP"), (18, "OSXSAVE"), (17, "PCIDE"),
        (16, "FSGSBASE"), (13, "VMXE"), (12, "LA57"), (11, "UMIP"), (10, "OSXMMEXCPT"),
        (9, "OSFXSR"), (8, "PCE"), (7, "PGE"), (6, "MCE"), (5, "PAE"), (4, "PSE"), (3, "DE"),
        (2, "TSD"), (1, "PVI"), (0, "VME")]
_EFER = [(11, "NXE"), (10, "LMA"), (8, "LME"), (0, "SCE")]
# fmt: on
_FLAG_REGS = {"eflags": _EFLAGS, "cr0": _CR0, "cr4": _CR4, "efer": _EFER}
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_ADDRESS_REGS = ("rip", "rsp", "rbp", "fs_base", "gs_base", "k_gs_base", "cr2", "cr3")

_NUMBER_RE = re.compile(r"[0-9][0-9a-zA-Z_]*")
_IDENT_RE = re.compile(r"[A-Za-z_.$][\w.$@]*")
_LOC_RE = re.compile(r"(?P<base>\$?[A-Za-z_.][\w.$@]*|[0-9]\w*)(?:(?P<op>[+-])(?P<off>\w+))?")


# ---------------------------------------------------------------------- parsing helpers
def parse_int(text: str) -> int:
    """A number as gdb reads one: 0x.. hex, 0.. octal is refused, else decimal."""
    try:
        return int(text, 0)
    except ValueError:
        raise ConsoleError(f'Invalid number "{text}".') from None


def parse_count(text: str, what: str = "count", limit: int | None = None) -> int:
    n = parse_int(text)
    if n < 1:
        raise ConsoleError(f"The {what} must be at least 1, not {text}.")
    if limit is not None and n > limit:
        raise ConsoleError(f"The {what} is at most {limit}, not {text}.")
    return n


def lookup_command(word: str) -> Command:
    cmd = _BY_NAME.get(word)
    if cmd is not None:
        return cmd
    matches = sorted({c.name for n, c in _BY_NAME.items() if n.startswith(word)})
    if len(matches) == 1:
        return _BY_NAME[matches[0]]
    if matches:
        raise ConsoleError(f'Ambiguous command "{word}": {", ".join(matches)}.')
    raise ConsoleError(f'Undefined command: "{word}".  Try "help".')


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


def format_bytes(data: bytes) -> str:
    """A watched value: an integer for 1/2/4/8 bytes, else the bytes in hex."""
    if len(data) in (1, 2, 4, 8):
        return f"{int.from_bytes(data, 'little'):#x}"
    shown = data[:16].hex(" ")
    return f"[{shown}{' ...' if len(data) > 16 else ''}]"


def format_flags(value: int, bits: list[tuple[int, str]]) -> str:
    names = [name for bit, name in bits if value >> bit & 1]
    return "[ " + " ".join(names) + " ]" if names else "[ ]"


def exit_value(e: RecordedExit) -> int:
    """The value an exit read or wrote (MMIO data bytes as a little-endian number)."""
    return e.value if isinstance(e.value, int) else int.from_bytes(e.value, "little")


def describe_exit(e: RecordedExit, *, short: bool = False) -> str:
    """'IO_OUT port 0x3f8 size 1 value 0xa' (short: without size)."""
    if e.kind.startswith("IO_"):
        where = f"port {e.addr:#x}"
    elif e.kind.startswith("MMIO_"):
        where = f"addr {e.addr:#x}"
    else:
        return e.kind
    value = f"{exit_value(e):#x}"
    if short:
        return f"{e.kind} {where} = {value}"
    return f"{e.kind} {where} size {e.size} value {value}"


# ---------------------------------------------------------------------- breakpoints
@dataclass
class Point:
    """A numbered breakpoint (``kind`` None) or watchpoint."""

    number: int
    address: int
    expr: str
    kind: WatchKind | None = None
    length: int = 0
    hits: int = 0

    @property
    def is_watch(self) -> bool:
        return self.kind is not None

    @property
    def key(self) -> tuple[int, int, WatchKind | None]:
        return (self.address, self.length, self.kind)

    @property
    def type_name(self) -> str:
        return {
            None: "breakpoint",
            WatchKind.WRITE: "hw watchpoint",
            WatchKind.READ: "read watchpoint",
            WatchKind.ACCESS: "acc watchpoint",
        }[self.kind]

    @property
    def title(self) -> str:
        return {
            None: "Breakpoint",
            WatchKind.WRITE: "Watchpoint",
            WatchKind.READ: "Read watchpoint",
            WatchKind.ACCESS: "Access watchpoint",
        }[self.kind]


@dataclass
class _Moved:
    """What a motion command reports: the stop (if any) and the values before it."""

    stop: Stop | None = None
    reverse: bool = False
    before: dict[int, bytes | None] = field(default_factory=dict)
    start_exit: int = 0


# ---------------------------------------------------------------------- the console
class Console:
    """One replay console over a ``ReplayTarget``; ``execute`` a line, get the text."""

    prompt = PROMPT

    def __init__(
        self,
        target: ReplayTarget,
        symbols: SymbolTable | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.target = target
        self.symbols = symbols
        self.runner: Runner = runner or (lambda fn, _stop: fn())
        self._cancel = threading.Event()  # Ctrl-C during a stepping loop
        self.points: list[Point] = []
        self._next_number = 1
        self._last_repeat: str | None = None

    # ------------------------------------------------------------------ entry points
    def execute(self, line: str) -> str:
        """Run one command line; the text to print ('' for none). Raises ConsoleQuit."""
        line = line.strip()
        if not line:
            if self._last_repeat is None:
                return ""
            line = self._last_repeat
        if line.startswith("#"):
            return ""
        try:
            cmd, fmt, args = self._parse(line)
            self._last_repeat = line if cmd.repeat else None
            if fmt is not None and cmd.name != "x":
                raise ConsoleError(f'The "{cmd.name}" command does not take "/{fmt}".')
            handler = getattr(self, cmd.handler)
            if cmd.name == "x":
                return handler(args, fmt)
            return handler(args)
        except ConsoleQuit:
            raise
        except ConsoleError as e:
            return _one_line(str(e))
        except TargetError as e:
            return _one_line(f"Cannot do that in the replay: {e}")
        except TargetDiverged as e:
            return _one_line(
                f"The replay diverged (a bug in rrvmm, please report it): {e}."
                " Go back with goto EXIT."
            )
        except Exception as e:  # noqa: BLE001 - a bug must not end the session
            return _one_line(f"Internal error ({type(e).__name__}): {e}")

    def _parse(self, line: str) -> tuple[Command, str | None, list[str]]:
        words = line.split()
        head, _, fmt = words[0].partition("/")
        if not head:
            raise ConsoleError(f'Undefined command: "{words[0]}".  Try "help".')
        return lookup_command(head), (fmt if "/" in words[0] else None), words[1:]

    def banner(self, trace_name: str = "") -> str:
        t = self.target
        what = f"{trace_name}: " if trace_name else ""
        if self.symbols is not None:
            syms = f"{len(self.symbols)} symbols from {self.symbols.source}"
        else:
            syms = "no symbols (give --symbols ELF)"
        return (
            f"rrvmm replay console: {what}{t.total_exits} exits on the {t.cpu_name} CPU,"
            f" {syms}.\n"
            'Type "help" for the commands; Tab completes commands and symbols.'
        )

    def status(self) -> str:
        """The bottom toolbar: position, RIP and symbol, the current exit, serial output."""
        t = self.target
        try:
            pos = t.position()
            k = pos.exit_index
            parts = [f"exit {k}/{t.total_exits} +{pos.instructions}"]
            rip = t.read_registers()["rip"]
            sym = self._sym(rip)
            parts.append(f"rip {rip:#x}" + (f" <{sym}>" if sym else ""))
            parts.append(self._current_exit_text(k, short=True))
            if t.end_reason is not None:
                parts.append("guest ended")
            last = self._last_serial_line()
            parts.append(f"serial: {last}" if last else "serial: -")
            return " | ".join(parts)
        except Exception as ex:  # noqa: BLE001 - the toolbar must never break the prompt
            return f"position unavailable: {_one_line(str(ex))}"

    def complete(self, text: str) -> list[tuple[str, int]]:
        """Completions for the line up to the cursor: (word, start offset <= 0)."""
        stripped = text.lstrip()
        if not re.search(r"\s", stripped):
            prefix = stripped
            names = sorted({n for n in _BY_NAME if n.startswith(prefix)})
            return [(n, -len(prefix)) for n in names]
        words = stripped.split()
        head = words[0].partition("/")[0]
        try:
            cmd = lookup_command(head)
        except ConsoleError:
            return []
        at_new_word = text[-1:].isspace()
        prefix = "" if at_new_word else words[-1]
        argn = len(words) - 1 if at_new_word else len(words) - 2
        kind = cmd.complete
        if kind == "info" and argn >= 1 and words[1] == "symbol":
            kind, argn = "symbols", 0
        if kind is None or (argn != 0 and kind != "registers"):
            return []
        bare = prefix.lstrip("*&")
        lead = len(prefix) - len(bare)
        if kind == "commands":
            cands = sorted({c.name for c in COMMANDS if c.name.startswith(bare)})
        elif kind == "info":
            cands = [t for t in INFO_TOPICS if t.startswith(bare)]
        elif kind == "monitor":
            cands = [t for t in MONITOR_COMMANDS if t.startswith(bare)]
        elif kind == "registers":
            cands = [r for r in REGISTER_NAMES if r.startswith(bare)]
        elif self.symbols is None:
            cands = []
        else:
            kinds = {
                "functions": (FUNCTION, LABEL),
                "objects": (OBJECT, LABEL),
                "symbols": None,
            }[kind]
            cands = self.symbols.names(bare, kinds)
            if not cands and kinds is not None:
                cands = self.symbols.names(bare)
        return [(c, -(len(prefix) - lead)) for c in cands]

    # ------------------------------------------------------------------ shared helpers
    def _move(self, fn: Callable[[], T], *, target_stops: bool = False) -> T:
        """Run a motion through the runner. Ctrl-C stops a run in the target
        (``target_stops``) or ends a stepping loop at its next step (``_cancelled``)."""
        self._cancel.clear()
        stop = self.target.interrupt if target_stops else self._cancel.set
        return self.runner(fn, stop)

    def _cancelled(self) -> bool:
        return self._cancel.is_set()

    def _sym(self, address: int) -> str:
        return self.symbols.describe(address) if self.symbols is not None else ""

    def _func_name(self, address: int) -> str:
        if self.symbols is None:
            return "??"
        found = self.symbols.find(address)
        return found[0].name if found else "??"

    def resolve(self, text: str) -> tuple[int, Symbol | None]:
        """An address expression: NUMBER, SYMBOL, SYMBOL+OFF, $REG(+OFF), with * or &."""
        t = text.strip()
        if t.startswith("*"):
            t = t[1:]
        if t.startswith("&"):
            t = t[1:]
        m = _LOC_RE.fullmatch(t)
        if m is None:
            raise ConsoleError(f'Invalid address "{text}".')
        base, sym = m.group("base"), None
        if base.startswith("$"):
            regs = self.target.read_registers()
            name = {"$pc": "rip", "$sp": "rsp", "$fp": "rbp"}.get(base, base[1:])
            if name not in regs:
                raise ConsoleError(f'Invalid register "{base}".')
            addr = regs[name]
        elif base[0].isdigit():
            addr = parse_int(base)
        else:
            if self.symbols is None:
                raise ConsoleError(
                    f'No symbol "{base}": no symbol table is loaded (start with --symbols ELF).'
                )
            sym = self.symbols.lookup(base)
            if sym is None:
                raise ConsoleError(f'No symbol "{base}" in current context.')
            addr = sym.address
        if m.group("op"):
            off = parse_int(m.group("off"))
            addr = addr + off if m.group("op") == "+" else addr - off
            sym = None
        return addr & MASK64, sym

    def _position(self) -> Position:
        return self.target.position()

    def _rip(self) -> int:
        return self.target.read_registers()["rip"]

    def _bits(self) -> int:
        """64, 32 or 16: the code size of the current CS (64 if it cannot be told)."""
        return self.target.code_bits()

    def _insns(self, address: int, count: int, end: int | None = None) -> list[Instruction]:
        try:
            return disassemble(self.target.read_memory, address, count, end=end, bits=self._bits())
        except TargetError:
            raise ConsoleError(f"Cannot access memory at address {address:#x}") from None

    def _insn_line(self, rip: int | None = None) -> str:
        """'=> 0x101ce2 <buggy_store+2>:\\tmovl ...' for RIP (gdb's x/i $pc)."""
        if rip is None:
            rip = self._rip()
        try:
            insns = self._insns(rip, 1)
        except ConsoleError:
            sym = self._sym(rip)
            return f"=> {rip:#x}{f' <{sym}>' if sym else ''}:\t(cannot read memory)"
        return format_instruction(insns[0], describe=self._sym, current=True)

    def _frame(self, rip: int) -> str:
        return f"{rip:#018x} in {self._func_name(rip)} ()"

    def _where_tag(self) -> str:
        pos = self._position()
        return f"[exit {pos.exit_index} +{pos.instructions}]"

    def _exit_row(self, k: int) -> RecordedExit | None:
        if k <= 0:
            return None
        rows = self.target.recorded_exits(k, 1)
        return rows[0] if rows and rows[0].index == k else None

    def _current_exit_text(self, k: int, *, short: bool = False) -> str:
        if k == 0:
            return "start of the recording" if short else "the start of the recording"
        row = self._exit_row(k)
        if row is None:
            return "exit not in the trace"
        return describe_exit(row, short=short)

    def _last_serial_line(self) -> str:
        text = self.target.serial_output(400).decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        return last if len(last) <= 48 else last[:45] + "..."

    def _no_args(self, args: list[str], name: str) -> None:
        if args:
            raise ConsoleError(f'"{name}" takes no arguments.')

    def _one_count(self, args: list[str], name: str, limit: int = 1_000_000) -> int:
        if len(args) > 1:
            raise ConsoleError(f"Usage: {name} [N]")
        return parse_count(args[0], limit=limit) if args else 1

    # ------------------------------------------------------------------ exits
    def _arrived(self) -> str:
        pos = self._position()
        k = pos.exit_index
        head = f"exit {k} of {self.target.total_exits}"
        if pos.instructions:
            head += f", {pos.instructions} instructions after it"
        lines = [f"{head}: {self._current_exit_text(k)}"]
        if self.target.end_reason is not None and pos.instructions == 0:
            lines.append(f"The guest ended here: {self.target.end_reason}")
        lines.append(self._insn_line())
        return "\n".join(lines)

    def _cmd_next_exit(self, args: list[str]) -> str:
        n = self._one_count(args, "next-exit")
        k = self._position().exit_index
        total = self.target.total_exits
        if k >= total:
            return "No more reverse-execution history (end of the recording).\n" + self._arrived()
        self._move(lambda: self.target.goto_exit(min(k + n, total)))
        return self._arrived()

    def _cmd_prev_exit(self, args: list[str]) -> str:
        n = self._one_count(args, "prev-exit")
        pos = self._position()
        if pos == Position(0, 0):
            return "No more reverse-execution history (start of the recording).\n" + self._arrived()
        target = pos.exit_index - n + (1 if pos.instructions else 0)
        self._move(lambda: self.target.goto_exit(max(target, 0)))
        return self._arrived()

    def _cmd_goto(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise ConsoleError("Usage: goto EXIT [INSNS]")
        k = parse_int(args[0])
        n = parse_int(args[1]) if len(args) > 1 else 0
        if k < 0 or n < 0:
            raise ConsoleError("Exit numbers and instruction counts are not negative.")
        if k > self.target.total_exits:
            raise ConsoleError(
                f"The recording has {self.target.total_exits} exits (0 is the start)."
            )
        if n:
            self._move(lambda: self.target.goto(Position(k, n)))
            pos = self._position()
            if pos != Position(k, n):
                return f"Exit {k} is followed by exit {k + 1} before {n} instructions.\n" + (
                    self._arrived()
                )
        else:
            self._move(lambda: self.target.goto_exit(k))
        return self._arrived()

    def _cmd_exits(self, args: list[str]) -> str:
        if len(args) > 2:
            raise ConsoleError("Usage: exits [FROM [N]]")
        here = self._position().exit_index
        start = parse_int(args[0]) if args else here
        count = parse_count(args[1], limit=100_000) if len(args) > 1 else EXITS_DEFAULT
        if start < 0:
            raise ConsoleError("Exit numbers are not negative.")
        rows = self.target.recorded_exits(start, count)
        if not rows:
            return f"No exits from {start} (the recording has {self.target.total_exits})."
        out = [f"   {'exit':>6}  {'kind':<11} {'port/addr':<14} {'size':<4} {'value':<18} rip"]
        for e in rows:
            kind = e.kind
            if kind.startswith(("IO_", "MMIO_")):
                where = ("port " if kind.startswith("IO_") else "") + f"{e.addr:#x}"
                value = f"{exit_value(e):#x}"
                size = str(e.size)
            else:
                where, value, size = "-", "-", "-"
            sym = self._sym(e.rip)
            mark = "=>" if e.index == here else "  "
            out.append(
                f"{mark} {e.index:>6}  {kind:<11} {where:<14} {size:<4} {value:<18}"
                f" {e.rip:#x}{f' <{sym}>' if sym else ''}"
            )
        return "\n".join(out)

    # ------------------------------------------------------------------ stepping
    def _cmd_stepi(self, args: list[str]) -> str:
        n = self._one_count(args, "stepi")
        k0 = self._position().exit_index

        def go() -> Stop:
            stop = Stop(StopKind.STEP)
            for _ in range(n):
                if self._cancelled():
                    return Stop(StopKind.INTERRUPTED)
                stop = self.target.resume(step=True)
                if stop.kind is not StopKind.STEP:
                    break
            return stop

        stop = self._move(go)
        return self._report(_Moved(stop, start_exit=k0))

    def _cmd_rstepi(self, args: list[str]) -> str:
        n = self._one_count(args, "rstepi")
        k0 = self._position().exit_index

        def go() -> Stop:
            remaining = n
            stop = Stop(StopKind.STEP)
            while remaining:
                if self._cancelled():
                    return Stop(StopKind.INTERRUPTED)
                pos = self.target.position()
                if pos.instructions:
                    # inside an interval: go straight there (as a reverse step does)
                    back = min(remaining, pos.instructions)
                    self.target.goto(Position(pos.exit_index, pos.instructions - back))
                    remaining -= back
                    continue
                stop = self.target.resume(reverse=True, step=True)  # across an exit
                if stop.kind is not StopKind.STEP:
                    break
                remaining -= 1
            return stop

        stop = self._move(go)
        return self._report(_Moved(stop, reverse=True, start_exit=k0))

    def _watch_values(self) -> dict[int, bytes | None]:
        out: dict[int, bytes | None] = {}
        for p in self.points:
            if p.is_watch:
                try:
                    out[p.number] = self.target.read_memory(p.address, min(p.length, 64))
                except TargetError:
                    out[p.number] = None
        return out

    def _cmd_continue(self, args: list[str]) -> str:
        self._no_args(args, "continue")
        return self._resume(reverse=False)

    def _cmd_rcontinue(self, args: list[str]) -> str:
        self._no_args(args, "rcontinue")
        return self._resume(reverse=True)

    def _resume(self, *, reverse: bool) -> str:
        before = self._watch_values()
        stop = self._move(lambda: self.target.resume(reverse=reverse), target_stops=True)
        return self._report(_Moved(stop, reverse=reverse, before=before))

    def _report(self, moved: _Moved) -> str:
        """How a stop reads in gdb: 'Breakpoint 1, 0x... in panic ()' and the instruction."""
        stop = moved.stop
        assert stop is not None
        rip = self._rip()
        lines: list[str] = []
        kind = stop.kind
        if kind is StopKind.BREAKPOINT:
            hit = [p for p in self.points if not p.is_watch and p.address == stop.address]
            for p in hit:
                p.hits += 1
            title = f"Breakpoint {hit[0].number}" if hit else "Breakpoint"
            lines.append(f"{title}, {self._frame(rip)} {self._where_tag()}")
        elif kind is StopKind.WATCHPOINT:
            hit = [
                p for p in self.points
                if p.is_watch and p.address == stop.address and p.kind == stop.watch
            ]  # fmt: skip
            if not hit:  # the target reports the watch's own address; match by overlap
                hit = [
                    p for p in self.points
                    if p.is_watch and p.address <= stop.address < p.address + max(p.length, 1)
                ]  # fmt: skip
            for p in hit:
                p.hits += 1
            if hit:
                p = hit[0]
                lines.append(f"{p.title} {p.number}: {p.expr} {self._change(p, moved.before)}")
            else:
                lines.append(f"Watchpoint at {stop.address:#x}")
            lines.append(f"{self._frame(rip)} {self._where_tag()}")
        elif kind is StopKind.STEP:
            k = self._position().exit_index
            if k != moved.start_exit:
                lo, hi = sorted((k, moved.start_exit))
                if hi - lo == 1:
                    crossed = max(k, moved.start_exit)
                    lines.append(f"[exit {crossed}: {self._current_exit_text(crossed)}]")
                else:
                    lines.append(f"[exits {lo + 1}..{hi}]")
        elif kind is StopKind.REPLAY_BEGIN:
            lines.append("No more reverse-execution history (start of the recording).")
            lines.append(f"{self._frame(rip)} {self._where_tag()}")
        elif kind is StopKind.REPLAY_END:
            lines.append("No more reverse-execution history (end of the recording).")
            if self.target.end_reason is not None:
                lines.append(f"The guest ended: {self.target.end_reason}")
            lines.append(f"{self._frame(rip)} {self._where_tag()}")
        elif kind is StopKind.INTERRUPTED:
            lines.append("Interrupted.")
            lines.append(f"{self._frame(rip)} {self._where_tag()}")
        elif kind is StopKind.EXITED:
            lines.append(f"The guest exited with status {stop.status}.")
        lines.append(self._insn_line(rip))
        return "\n".join(lines)

    def _change(self, p: Point, before: dict[int, bytes | None]) -> str:
        old = before.get(p.number)
        try:
            new: bytes | None = self.target.read_memory(p.address, min(p.length, 64))
        except TargetError:
            new = None
        o = format_bytes(old) if old is not None else "<unreadable>"
        n = format_bytes(new) if new is not None else "<unreadable>"
        if p.kind is WatchKind.READ or old == new:
            return f"= {n}"
        return f"{o} -> {n}"

    # ------------------------------------------------------------------ break / watch
    def _new_point(self, point: Point) -> Point:
        self.points.append(point)
        self._next_number = point.number + 1
        return point

    def _cmd_break(self, args: list[str]) -> str:
        if len(args) != 1:
            raise ConsoleError("Usage: break ADDR|SYMBOL")
        addr, _sym = self.resolve(args[0])
        self.target.add_breakpoint(addr)
        p = self._new_point(Point(self._next_number, addr, args[0]))
        sym = self._sym(addr)
        note = ""
        others = [q.number for q in self.points if not q.is_watch and q.address == addr and q != p]
        if others:
            note = f" (also breakpoint {', '.join(map(str, others))})"
        return f"Breakpoint {p.number} at {addr:#x}{f' <{sym}>' if sym else ''}{note}"

    def _cmd_watch(self, args: list[str]) -> str:
        return self._watch(args, WatchKind.WRITE, "watch")

    def _cmd_rwatch(self, args: list[str]) -> str:
        return self._watch(args, WatchKind.READ, "rwatch")

    def _cmd_awatch(self, args: list[str]) -> str:
        return self._watch(args, WatchKind.ACCESS, "awatch")

    def _watch(self, args: list[str], kind: WatchKind, name: str) -> str:
        if not 1 <= len(args) <= 2:
            raise ConsoleError(f"Usage: {name} ADDR|SYMBOL [LEN]")
        addr, sym = self.resolve(args[0])
        if len(args) > 1:
            length = parse_count(args[1], "length", limit=1 << 20)
        elif sym is not None and sym.size:
            length = sym.size
        else:
            length = 8
        try:
            self.target.read_memory(addr, 1)
        except TargetError:
            raise ConsoleError(f"Cannot access memory at address {addr:#x}") from None
        self.target.add_watchpoint(addr, length, kind)
        p = self._new_point(Point(self._next_number, addr, args[0].lstrip("&"), kind, length))
        title = {
            WatchKind.WRITE: "Hardware watchpoint",
            WatchKind.READ: "Hardware read watchpoint",
            WatchKind.ACCESS: "Hardware access (read/write) watchpoint",
        }[kind]
        return f"{title} {p.number}: {p.expr} ({length} bytes at {addr:#x})"

    def _cmd_delete(self, args: list[str]) -> str:
        if not args:
            n = len(self.points)
            for p in list(self.points):
                self._remove(p)
            if not n:
                return "No breakpoints or watchpoints."
            return f"Deleted all breakpoints and watchpoints ({n})."
        numbers = [parse_int(a) for a in args]
        by_number = {p.number: p for p in self.points}
        missing = [n for n in numbers if n not in by_number]
        if missing:
            raise ConsoleError(f"No breakpoint number {missing[0]}.")
        for n in numbers:
            self._remove(by_number[n])
        return f"Deleted {', '.join(map(str, numbers))}."

    def _remove(self, p: Point) -> None:
        self.points.remove(p)
        same = [q for q in self.points if q.key == p.key]
        if p.is_watch:
            assert p.kind is not None
            self.target.remove_watchpoint(p.address, p.length, p.kind)
            for _ in same:  # the target removes every equal watch; keep the other numbers
                self.target.add_watchpoint(p.address, p.length, p.kind)
        elif not same:
            self.target.remove_breakpoint(p.address)

    # ------------------------------------------------------------------ info
    def _breakpoint_table(self) -> str:
        if not self.points:
            return "No breakpoints or watchpoints."
        out = [f"{'Num':<7} {'Type':<16} {'Address':<18} What"]
        for p in self.points:
            sym = self._sym(p.address)
            if p.is_watch:
                what = f"{p.expr} ({p.length} bytes)"
            else:
                what = f"<{sym}>" if sym else p.expr
            out.append(f"{p.number:<7} {p.type_name:<16} {p.address:#018x} {what}")
            if p.hits:
                out.append(f"\t{p.type_name} already hit {p.hits} time{'s' if p.hits != 1 else ''}")
        return "\n".join(out)

    def _position_text(self) -> str:
        pos = self._position()
        rip = self._rip()
        sym = self._sym(rip)
        lines = [
            f"Position: exit {pos.exit_index} of {self.target.total_exits},"
            f" {pos.instructions} instructions since it",
            f"Current exit: {self._current_exit_text(pos.exit_index)}",
            f"rip {rip:#x}{f' <{sym}>' if sym else ''}",
        ]
        if self.target.end_reason is not None:
            lines.append(f"The guest ended: {self.target.end_reason}")
        return "\n".join(lines)

    def _engine_info(self) -> str:
        text = self.target.monitor("info")
        skip = ("position:", "breakpoints:", "watchpoints:")
        return "\n".join(ln for ln in text.splitlines() if not ln.startswith(skip))

    def _cmd_info(self, args: list[str]) -> str:
        if not args:
            parts = [self._position_text(), self._breakpoint_table()]
            engine_info = self._engine_info()
            if engine_info:
                parts.append("Replay: " + engine_info.replace("\n", "\nReplay: "))
            return "\n".join(parts)
        topic, rest = args[0], args[1:]
        matches = [t for t in INFO_TOPICS if t.startswith(topic)]
        if topic in ("b", "break", "watch"):
            matches = ["breakpoints"]
        if topic in ("r", "reg", "regs"):
            matches = ["registers"]
        if len(matches) != 1:
            raise ConsoleError(
                f'Undefined info command: "{topic}".  Try: info {"|".join(INFO_TOPICS)}.'
            )
        topic = matches[0]
        if topic == "registers":
            return self._cmd_regs(rest)
        if rest and topic != "symbol":
            raise ConsoleError(f'"info {topic}" takes no arguments.')
        if topic in ("breakpoints", "watchpoints"):
            return self._breakpoint_table()
        if topic == "position":
            return self._position_text()
        if topic == "checkpoints":
            return self._engine_info()
        # symbol
        if len(rest) != 1:
            raise ConsoleError("Usage: info symbol ADDR")
        addr, _ = self.resolve(rest[0])
        if self.symbols is None:
            raise ConsoleError("No symbol table is loaded (start with --symbols ELF).")
        found = self.symbols.find(addr)
        if found is None:
            return f"No symbol matches {rest[0]}."
        sym, off = found
        where = f"{sym.name} + {off}" if off else sym.name
        return f"{where} ({sym.kind}, {sym.size} bytes at {sym.address:#x})"

    def _cmd_regs(self, args: list[str]) -> str:
        regs = self.target.read_registers()
        names = [a.lstrip("$") for a in args] or [n for n in REGISTER_NAMES if n in regs]
        names = ["rip" if n == "pc" else "rsp" if n == "sp" else n for n in names]
        for n in names:
            if n not in regs:
                raise ConsoleError(f'Invalid register "{n}".')
        out = []
        for n in names:
            v = regs[n]
            if n in _FLAG_REGS:
                natural = format_flags(v, _FLAG_REGS[n])
            elif n == "rip":
                sym = self._sym(v)
                natural = f"{v:#x}{f' <{sym}>' if sym else ''}"
            elif n in _ADDRESS_REGS:
                natural = f"{v:#x}"
            elif n in _SEGMENTS:
                natural = str(v)
            else:
                natural = str(v - (1 << 64) if v >> 63 else v)
            out.append(f"{n:<15}{v:<#19x}{natural}")
        return "\n".join(out)

    # ------------------------------------------------------------------ memory
    def _cmd_x(self, args: list[str], fmt: str | None = None) -> str:
        if not 1 <= len(args) <= 2:
            raise ConsoleError("Usage: x[/NFMT] ADDR [N]")
        count, size, style = 1, 8, "x"
        if fmt:
            m = re.fullmatch(r"(\d*)([a-z]*)", fmt)
            if m is None:
                raise ConsoleError(f'Invalid format "/{fmt}".')
            if m.group(1):
                count = parse_count(m.group(1))
            for letter in m.group(2):
                if letter in "bhwg":
                    size = {"b": 1, "h": 2, "w": 4, "g": 8}[letter]
                elif letter in "xdu":
                    style = letter
                else:
                    raise ConsoleError(
                        f'Invalid format letter "{letter}": sizes b h w g, formats x d u.'
                    )
        if len(args) > 1:
            count = parse_count(args[1])
        if count * size > MAX_X_BYTES:
            raise ConsoleError(f"At most {MAX_X_BYTES} bytes at once.")
        addr, _ = self.resolve(args[0])
        try:
            data = self.target.read_memory(addr, count * size)
        except TargetError:
            raise ConsoleError(f"Cannot access memory at address {addr:#x}") from None
        per_line = {1: 8, 2: 8, 4: 4, 8: 2}[size]
        out = []
        for i in range(0, count, per_line):
            a = addr + i * size
            sym = self._sym(a)
            cells = []
            for j in range(i, min(count, i + per_line)):
                v = int.from_bytes(data[j * size : (j + 1) * size], "little")
                if style == "x":
                    cells.append(f"0x{v:0{2 * size}x}")
                elif style == "d":
                    cells.append(str(v - (1 << 8 * size) if v >> (8 * size - 1) else v))
                else:
                    cells.append(str(v))
            out.append(f"{a:#x}{f' <{sym}>' if sym else ''}:\t" + "\t".join(cells))
        return "\n".join(out)

    def _cmd_disas(self, args: list[str]) -> str:
        if len(args) > 2:
            raise ConsoleError("Usage: disas [ADDR|SYMBOL] [N]")
        rip = self._rip()
        count = parse_count(args[1], limit=MAX_DISAS) if len(args) > 1 else None
        func: Symbol | None = None
        if args:
            addr, sym = self.resolve(args[0])
            if sym is not None and sym.kind == FUNCTION and sym.size and count is None:
                func = sym
        else:
            addr = rip
            if self.symbols is not None and count is None:
                func = self.symbols.function_at(rip)
        if func is not None:
            insns = self._insns(func.address, MAX_DISAS, end=func.address + func.size)
            lines = [f"Dump of assembler code for function {func.name}:"]
            for insn in insns:
                lines.append(
                    format_instruction(insn, current=insn.address == rip, wide=True,
                                       label=f"<+{insn.address - func.address}>",
                                       describe=self._sym)
                )  # fmt: skip
            lines.append("End of assembler dump.")
            return "\n".join(lines)
        insns = self._insns(addr, count or DISAS_DEFAULT)
        return "\n".join(
            format_instruction(i, describe=self._sym, current=i.address == rip) for i in insns
        )

    # ------------------------------------------------------------------ the rest
    def _cmd_serial(self, args: list[str]) -> str:
        if len(args) > 1:
            raise ConsoleError("Usage: serial [LINES]")
        text = self.target.serial_output().decode("utf-8", "replace")
        if not text:
            return f"(no serial output up to exit {self._position().exit_index})"
        if args:
            text = "".join(text.splitlines(keepends=True)[-parse_count(args[0]) :])
        return text[:-1] if text.endswith("\n") else text

    def _cmd_monitor(self, args: list[str]) -> str:
        return self.target.monitor(" ".join(args))

    def _cmd_help(self, args: list[str]) -> str:
        if args:
            cmd = lookup_command(args[0])
            lines = [f"{cmd.usage}: {cmd.summary}."]
            if cmd.aliases:
                lines.append(f"Aliases: {', '.join(cmd.aliases)}.")
            if cmd.details:
                lines.append(cmd.details)
            return "\n".join(lines)
        width = max(len(c.usage) for c in COMMANDS)
        lines = ["Commands (aliases in brackets):"]
        for c in COMMANDS:
            alias = f" [{', '.join(c.aliases)}]" if c.aliases else ""
            lines.append(f"  {c.usage:<{width}}  {c.summary}{alias}")
        lines.append('"help COMMAND" tells more about one.')
        lines.append("A position is an exit and the instructions since it.")
        lines.append("ADDR: 0x101ce2, SYMBOL, SYMBOL+OFF, *ADDR or $reg.")
        lines.append("An empty line repeats stepping commands; Ctrl-C stops a run.")
        return "\n".join(lines)

    def _cmd_quit(self, args: list[str]) -> str:
        raise ConsoleQuit
