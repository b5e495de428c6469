"""A scripted in-memory Target for the gdb stub tests.

Registers are a dict, memory one bytearray mapped at ``base``. ``resume`` first plays
``script`` (each item a :class:`Stop`, or a callable taking the target and returning one,
so it can move rip or change memory first); once the script is empty it simulates a
straight-line program between ``begin_pc`` and ``end_pc``: a step moves rip by one, a
continue runs to the nearest breakpoint in that direction or to the end of the recording.
With ``hang=True`` a resume blocks until :meth:`interrupt`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from rrvmm.target import (
    REGISTER_NAMES,
    Position,
    Stop,
    StopKind,
    TargetError,
    WatchKind,
)

ScriptItem = Stop | Callable[["FakeTarget"], Stop]

BASE = 0x1000
SIZE = 0x2000
BEGIN_PC = 0x1100
END_PC = 0x1180
DATA = 0x2000  # 8-byte little-endian counters live here


def initial_registers() -> dict[str, int]:
    regs = {name: 0 for name in REGISTER_NAMES}
    regs.update(
        rax=0x1111111111111111,
        rbx=0x2222222222222222,
        rcx=0xC,
        rdx=0xD,
        rsi=0x51,
        rdi=0xD1,
        rbp=0x2F00,
        rsp=0x2E00,
        r15=0xF0F0F0F0F0F0F0F0,
        rip=BEGIN_PC,
        eflags=0x246,
        cs=0x8,
        ss=0x10,
        ds=0x10,
        es=0x10,
        fs=0x10,
        gs=0x10,
        fs_base=0xF5BA5E,
        gs_base=0x65BA5E,
        k_gs_base=0x6B65BA5E,
        cr0=0x80050033,
        cr2=0xC2,
        cr3=0x1000,
        cr4=0x6A0,
        cr8=0x8,
        efer=0xD01,
    )
    return regs


class FakeTarget:
    def __init__(self, *, writable: bool = False, hang: bool = False) -> None:
        self.registers = initial_registers()
        self.base = BASE
        self.memory = bytearray(b"\x90" * SIZE)  # nops
        for i in range(4):
            off = DATA - BASE + 8 * i
            self.memory[off : off + 8] = (0x1000 + i).to_bytes(8, "little")
        self.writable = writable
        self.hang = hang
        self.begin_pc = BEGIN_PC
        self.end_pc = END_PC
        self.script: deque[ScriptItem] = deque()
        self.breakpoints: set[tuple[int, bool]] = set()
        self.watchpoints: set[tuple[int, int, WatchKind]] = set()
        self.ever_set: set[tuple[int, int | bool, WatchKind | None]] = set()  # every insert
        self.resumes: list[tuple[bool, bool]] = []
        self.monitor_commands: list[str] = []
        self.interrupts = 0
        self._interrupted = threading.Event()
        self.running = threading.Event()

    # -- Target ---------------------------------------------------------------------------

    def read_registers(self) -> dict[str, int]:
        return dict(self.registers)

    def write_register(self, name: str, value: int) -> None:
        if not self.writable:
            raise TargetError("replay is read-only")
        if name not in self.registers:
            raise TargetError(f"no register {name}")
        self.registers[name] = value

    def _offset(self, address: int, length: int) -> int:
        off = address - self.base
        if off < 0 or off + length > len(self.memory):
            raise TargetError(f"unmapped: {address:#x}+{length}")
        return off

    def read_memory(self, address: int, length: int) -> bytes:
        off = self._offset(address, length)
        return bytes(self.memory[off : off + length])

    def write_memory(self, address: int, data: bytes) -> None:
        if not self.writable:
            raise TargetError("replay is read-only")
        off = self._offset(address, len(data))
        self.memory[off : off + len(data)] = data

    def add_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.add((address, hardware))
        self.ever_set.add((address, hardware, None))

    def remove_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.discard((address, hardware))

    def add_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watchpoints.add((address, length, kind))
        self.ever_set.add((address, length, kind))

    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watchpoints.discard((address, length, kind))

    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        self.resumes.append((reverse, step))
        if self.hang:
            self._interrupted.clear()
            self.running.set()
            self._interrupted.wait()
            self.running.clear()
            return Stop(StopKind.INTERRUPTED)
        if self.script:
            item = self.script.popleft()
            return item if isinstance(item, Stop) else item(self)
        return self._simulate(reverse, step)

    def interrupt(self) -> None:
        self.interrupts += 1
        self._interrupted.set()

    def position(self) -> Position:
        return Position(0, self.registers["rip"] - self.begin_pc)

    def monitor(self, command: str) -> str:
        self.monitor_commands.append(command)
        if command == "fail":
            raise TargetError("no such thing")
        if command == "info":
            return f"position {self.position()}\n"
        return f"ran {command!r}\n" if command else ""

    # -- the simulated program ------------------------------------------------------------

    def _simulate(self, reverse: bool, step: bool) -> Stop:
        pc = self.registers["rip"]
        if step:
            if reverse:
                if pc <= self.begin_pc:
                    return Stop(StopKind.REPLAY_BEGIN)
                self.registers["rip"] = pc - 1
            else:
                if pc >= self.end_pc:
                    return Stop(StopKind.REPLAY_END)
                self.registers["rip"] = pc + 1
            return Stop(StopKind.STEP)
        if reverse:
            hits = [b for b in self.breakpoints if self.begin_pc <= b[0] < pc]
            best = max(hits, default=None)
        else:
            hits = [b for b in self.breakpoints if pc < b[0] <= self.end_pc]
            best = min(hits, default=None)
        if best is None:
            self.registers["rip"] = self.begin_pc if reverse else self.end_pc
            return Stop(StopKind.REPLAY_BEGIN if reverse else StopKind.REPLAY_END)
        self.registers["rip"] = best[0]
        return Stop(StopKind.BREAKPOINT, address=best[0], hardware=best[1])
