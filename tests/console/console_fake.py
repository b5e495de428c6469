"""A stand-in ``ReplayTarget`` for console tests that need no KVM.

It implements the protocol the console drives (``rrvmm.target.ReplayTarget``) and nothing
of the engine's insides. Memory is the `corrupt` guest's ELF image (its loadable sections
at their addresses), so disassembly and symbols are real; registers, position, the
recorded exits and stops are scripted.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from rrvmm.target import (
    REGISTER_NAMES,
    Position,
    RecordedExit,
    RecordedImage,
    Stop,
    StopKind,
    TargetError,
    WatchKind,
)


class FakeTarget:
    def __init__(self, elf: Path, exits: list[RecordedExit]) -> None:
        from elftools.elf.elffile import ELFFile

        self.memory: dict[int, bytes] = {}
        with open(elf, "rb") as f:
            for sec in ELFFile(f).iter_sections():
                if sec["sh_flags"] & 2 and sec["sh_type"] == "SHT_PROGBITS":
                    self.memory[sec["sh_addr"]] = sec.data()
        self.regs = {n: 0 for n in REGISTER_NAMES}
        self.regs.update(rip=0x101CE2, rsp=0x10AD88, eflags=0x246, cs=8, ss=0x10, cr0=0x80000011)
        self.pos = Position(0, 0)
        self.exits = exits  # exits 1..N
        self.serial = bytearray(b"hello\nworld\n")
        self.end_reason: str | None = None
        self.breakpoints: set[int] = set()
        self.watches: list[tuple[int, int, WatchKind]] = []
        self.stops: deque[Stop] = deque()
        self.calls: list[tuple] = []

    # --- Target ---
    def read_registers(self) -> dict[str, int]:
        return dict(self.regs)

    def write_register(self, name: str, value: int) -> None:
        raise TargetError("a replay is read-only: registers cannot be changed")

    def read_memory(self, address: int, length: int) -> bytes:
        for base, data in self.memory.items():
            if base <= address and address + length <= base + len(data):
                return data[address - base : address - base + length]
        raise TargetError(f"page fault at {address:#x}")

    def write_memory(self, address: int, data: bytes) -> None:
        raise TargetError("a replay is read-only: memory cannot be changed")

    def add_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.add(address)

    def remove_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.discard(address)

    def add_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watches.append((address, length, kind))

    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watches = [w for w in self.watches if w != (address, length, kind)]

    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        self.calls.append(("resume", reverse, step))
        if self.stops:
            return self.stops.popleft()
        if step:
            k, n = self.pos.exit_index, self.pos.instructions
            if not reverse:
                self.pos = Position(k, n + 1)
            elif n:
                self.pos = Position(k, n - 1)
            elif k:
                self.pos = Position(k - 1, 5)
            else:
                return Stop(StopKind.REPLAY_BEGIN)
            return Stop(StopKind.STEP)
        return Stop(StopKind.REPLAY_BEGIN if reverse else StopKind.REPLAY_END)

    def interrupt(self) -> None:
        pass

    def position(self) -> Position:
        return self.pos

    def monitor(self, command: str) -> str:
        if command == "info":
            return "position: ...\ncheckpoints: 1 (every 1000 exits)\nbreakpoints: none"
        raise TargetError(f"unknown monitor command {command!r}")

    # --- ReplayTarget ---
    @property
    def total_exits(self) -> int:
        return len(self.exits)

    @property
    def cpu_name(self) -> str:
        return "kvm"

    @property
    def trace_path(self) -> str:
        return "fake.rrt"

    def recorded_kernel(self) -> RecordedImage | None:
        return None

    def symbol_file(self, scratch: Path) -> Path | None:
        return None

    def goto_exit(self, exit_index: int) -> None:
        self.calls.append(("goto_exit", exit_index))
        if exit_index > self.total_exits:
            raise TargetError(f"the recording has {self.total_exits} exits")
        self.pos = Position(exit_index, 0)

    def goto(self, position: Position) -> None:
        self.calls.append(("goto", position))
        self.pos = position

    def recorded_exits(self, start: int, count: int) -> list[RecordedExit]:
        return [e for e in self.exits if e.index >= start][:count]

    def serial_output(self, last: int | None = None) -> bytes:
        return bytes(self.serial if last is None else self.serial[-last:])

    def code_bits(self) -> int:
        return 64
