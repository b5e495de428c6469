"""The debugger-neutral view of a replayed guest that the gdb stub and the console drive.

A ``Target`` is stopped between commands; ``resume`` runs it forward or backward until a
breakpoint, watchpoint, single step, the start or end of the recording, or an interrupt,
and reports why it stopped. Positions are (exit index, instructions since that exit).

A ``ReplayTarget`` is a Target over a recording, with what a replay debugger shows beyond
gdb's view: the recorded exits, going to any of them, the serial output so far. The
replay engine (``rrvmm.replay.engine``) implements both; the faces (``rrvmm.gdbstub``,
``rrvmm.console``) import this module and never the engine, nor each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "Target",
    "ReplayTarget",
    "RecordedExit",
    "RecordedImage",
    "Stop",
    "StopKind",
    "WatchKind",
    "Position",
    "TargetError",
    "TargetDiverged",
    "REGISTER_NAMES",
]

# The registers a Target reports, in the order of gdb's i386:x86-64 description plus the
# segment bases and control registers (as QEMU's stub offers them).
REGISTER_NAMES: tuple[str, ...] = (
    "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip eflags "
    "cs ss ds es fs gs fs_base gs_base k_gs_base cr0 cr2 cr3 cr4 cr8 efer"
).split()


class TargetError(Exception):
    """A request the target cannot satisfy (bad address, read-only replay, ...)."""


class TargetDiverged(Exception):
    """The replay left the recorded timeline: a bug in rrvmm, not a bad request. The
    message is the report; the target stays usable from any earlier position."""


class StopKind(Enum):
    BREAKPOINT = "breakpoint"  # a software or hardware execution breakpoint
    WATCHPOINT = "watchpoint"  # a data watchpoint; ``Stop.address`` is the data address
    STEP = "step"  # a single step finished
    INTERRUPTED = "interrupted"  # Ctrl-C / interrupt()
    REPLAY_BEGIN = "replay_begin"  # ran backwards into the start of the recording
    REPLAY_END = "replay_end"  # ran forwards into the end of the recording
    EXITED = "exited"  # the guest ended (status in ``Stop.status``)


class WatchKind(Enum):
    WRITE = "write"
    READ = "read"
    ACCESS = "access"


@dataclass(frozen=True)
class Position:
    exit_index: int
    instructions: int  # since that exit


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    address: int = 0  # watchpoint data address, or breakpoint address
    watch: WatchKind | None = None
    status: int = 0  # for EXITED
    hardware: bool = False  # for BREAKPOINT: a hardware breakpoint (Z1) rather than Z0


class Target(Protocol):
    def read_registers(self) -> dict[str, int]:
        """All of ``REGISTER_NAMES`` (segment registers are selectors)."""
        ...

    def write_register(self, name: str, value: int) -> None:
        """Replay is read-only: raises TargetError unless the target allows writes."""
        ...

    def read_memory(self, address: int, length: int) -> bytes:
        """Guest *virtual* memory through the current page tables; TargetError if unmapped."""
        ...

    def write_memory(self, address: int, data: bytes) -> None: ...

    def add_breakpoint(self, address: int, hardware: bool = False) -> None: ...
    def remove_breakpoint(self, address: int, hardware: bool = False) -> None: ...
    def add_watchpoint(self, address: int, length: int, kind: WatchKind) -> None: ...
    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None: ...

    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        """Continue (or single-step one instruction) forward or backward."""
        ...

    def interrupt(self) -> None:
        """Ask a running ``resume`` to stop soon with INTERRUPTED; safe from any thread."""
        ...

    def position(self) -> Position: ...

    def monitor(self, command: str) -> str:
        """A `monitor` command (info, exits, goto N, checkpoint); returns the text to show."""
        ...


@dataclass(frozen=True)
class RecordedExit:
    """One VM exit as the trace recorded it."""

    index: int  # 1 is the first exit
    kind: str  # the exit kind's name: IO_IN, IO_OUT, MMIO_READ, MMIO_WRITE, HLT, ...
    addr: int  # the port or guest-physical address (0 where the kind has none)
    size: int
    value: int | bytes  # a port's value; the bytes of an MMIO or string access
    rip: int


@dataclass(frozen=True)
class RecordedImage:
    """A guest image the recording booted: where it was and what it hashed to."""

    path: str
    sha256: str


@runtime_checkable
class ReplayTarget(Target, Protocol):
    """A Target over a recording: its exits can be listed and gone to. (Runtime-checkable
    so tests can tell that a stand-in has every member.)"""

    @property
    def total_exits(self) -> int:
        """How many exits the recording holds (positions run from exit 0 to this one)."""
        ...

    @property
    def end_reason(self) -> str | None:
        """Why the guest ended, when the replay stands at the guest's own end; else None."""
        ...

    @property
    def cpu_name(self) -> str:
        """The CPU backend the replay runs on ('kvm' or 'soft')."""
        ...

    @property
    def trace_path(self) -> str: ...

    def recorded_kernel(self) -> RecordedImage | None:
        """The kernel image the recording booted, as its header names it."""
        ...

    def symbol_file(self, scratch: Path) -> Path | None:
        """The best symbol file for the recorded guest (any ELF class): symbols a packed
        trace carries, else the recorded kernel if it is still the recorded ELF, else its
        packed copy; files that exist only inside the trace are written into ``scratch``."""
        ...

    def goto_exit(self, exit_index: int) -> None:
        """Go to just after exit ``exit_index``, before the guest resumes (forward or back).
        TargetError past ``total_exits``."""
        ...

    def goto(self, position: Position) -> None:
        """Go to exit ``position.exit_index``, then single-step ``position.instructions``
        times (into the next interval if this one is shorter)."""
        ...

    def recorded_exits(self, start: int, count: int) -> list[RecordedExit]:
        """Up to ``count`` recorded exits from exit ``start`` on, in order."""
        ...

    def serial_output(self, last: int | None = None) -> bytes:
        """What the guest wrote to its serial port up to here (only the ``last`` bytes)."""
        ...

    def code_bits(self) -> int:
        """64, 32 or 16: the code size the current CS selects (how to disassemble)."""
        ...
