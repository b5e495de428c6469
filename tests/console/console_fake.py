"""A stand-in replay engine for console tests that need no KVM.

Memory is the `corrupt` guest's ELF image (its loadable sections at their addresses), so
disassembly and symbols are real; registers, position and stops are scripted.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from types import SimpleNamespace

from rrvmm.replay.events import EventKind
from rrvmm.target import REGISTER_NAMES, Position, Stop, StopKind, TargetError, WatchKind


class FakeReader:
    def __init__(self, exits: list[tuple[int, int, int, object, int]]) -> None:
        # exits 1..N as (exit_kind, addr, size, value, rip)
        self.exits = exits

    def events(self, start: int = 0):  # noqa: ANN201
        for i, (kind, addr, size, value, rip) in enumerate(self.exits, start=1):
            if i >= start:
                yield i, (EventKind.EXIT, kind, addr, size, value, rip)


class FakeEngine:
    def __init__(self, elf: Path, exits: list[tuple[int, int, int, object, int]]) -> None:
        from elftools.elf.elffile import ELFFile

        self.memory: dict[int, bytes] = {}
        with open(elf, "rb") as f:
            for sec in ELFFile(f).iter_sections():
                if sec["sh_flags"] & 2 and sec["sh_type"] == "SHT_PROGBITS":
                    self.memory[sec["sh_addr"]] = sec.data()
        self.regs = {n: 0 for n in REGISTER_NAMES}
        self.regs.update(rip=0x101CE2, rsp=0x10AD88, eflags=0x246, cs=8, ss=0x10, cr0=0x80000011)
        self.pos = Position(0, 0)
        self.total_exits = len(exits)
        self.cpu = SimpleNamespace(name="kvm")
        self.reader = FakeReader(exits)
        self.serial = SimpleNamespace(transcript=bytearray(b"hello\nworld\n"))
        self.ended = None
        self.breakpoints: set[int] = set()
        self.watches: list[tuple[int, int, WatchKind]] = []
        self.stops: deque[Stop] = deque()
        self.calls: list[tuple] = []

    # --- Target ---
    def read_registers(self) -> dict[str, int]:
        return dict(self.regs)

    def read_memory(self, address: int, length: int) -> bytes:
        for base, data in self.memory.items():
            if base <= address and address + length <= base + len(data):
                return data[address - base : address - base + length]
        raise TargetError(f"page fault at {address:#x}")

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

    def position(self) -> Position:
        return self.pos

    def goto_exit(self, k: int) -> None:
        self.calls.append(("goto_exit", k))
        if k > self.total_exits:
            raise TargetError(f"the recording has {self.total_exits} exits")
        self.pos = Position(k, 0)

    def goto(self, pos: Position) -> None:
        self.calls.append(("goto", pos))
        self.pos = pos

    def monitor(self, command: str) -> str:
        if command == "info":
            return "position: ...\ncheckpoints: 1 (every 1000 exits)\nbreakpoints: none"
        raise TargetError(f"unknown monitor command {command!r}")

    def interrupt(self) -> None:
        pass
