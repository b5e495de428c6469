"""The debugger-neutral view of a replayed guest that the gdb stub and the console drive.

A ``Target`` is stopped between commands; ``resume`` runs it forward or backward until a
breakpoint, watchpoint, single step, the start or end of the recording, or an interrupt,
and reports why it stopped. Positions are (exit index, instructions since that exit).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

__all__ = [
    "Target",
    "Stop",
    "StopKind",
    "WatchKind",
    "Position",
    "TargetError",
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
