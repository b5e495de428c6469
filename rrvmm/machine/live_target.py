"""A live machine as a debugger ``Target``: `rrvmm run --gdb` and `record --gdb` (QEMU's -s -S).

The guest stands before its first instruction until gdb resumes it. Between stops it runs
exactly as ``Machine.run`` runs it (``prepare_entry`` once per exit interval, every exit
through ``handle_exit``, so a recording under gdb is an ordinary recording); breakpoints
are the CPU's debug breakpoints and single steps its trap flag, which stop the vCPU without
a VM exit the machine or the trace would see. There is no going back (that needs the
recording: ``can_reverse`` is False and the stub says so) and no watchpoints. Registers and
memory may be changed, except while recording: a change the trace does not hold would make
the recording diverge on replay. gdb's ``kill`` ends the run (status 130); detaching lets
the guest run on to its end.
"""

from __future__ import annotations

import threading
from typing import Any

from rrvmm.cpu.backend import GPR_NAMES, ExitKind, VcpuExit
from rrvmm.cpu.mmu import PageFault, read_virtual, translate
from rrvmm.errors import ExitStatus
from rrvmm.machine.pc import Machine, MachineStop, RunResult
from rrvmm.target import REGISTER_NAMES, Position, Stop, StopKind, TargetError, WatchKind

__all__ = ["LiveTarget", "read_target_registers"]

_PAGE = 4096
_WRITABLE = frozenset(GPR_NAMES) | {"eflags"}


def read_target_registers(cpu: Any) -> dict[str, int]:
    """``REGISTER_NAMES`` from a CPU backend (segment registers as selectors)."""
    regs = cpu.get_regs()
    sregs = cpu.get_sregs()
    out = {n: regs[n] for n in REGISTER_NAMES if n in regs}
    out["eflags"] = regs["rflags"]
    for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
        out[seg] = sregs[seg]["selector"]
    out["fs_base"] = sregs["fs"]["base"]
    out["gs_base"] = sregs["gs"]["base"]
    out["k_gs_base"] = cpu.get_msrs([0xC0000102]).get(0xC0000102, 0)
    for cr in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer"):
        out[cr] = sregs[cr]
    return out


class LiveTarget:
    """Implements ``rrvmm.target.Target`` over a booted, not yet started ``Machine``."""

    can_reverse = False  # the gdb stub answers reverse requests with why not

    def __init__(self, machine: Machine, *, recording: bool = False) -> None:
        self.machine = machine
        self.cpu: Any = machine.cpu
        self.recording = recording
        self.breakpoints: set[int] = set()
        self.result: RunResult | None = None  # the guest's end, once it ended
        self._prepared = False  # prepare_entry done for the current exit interval
        self._interrupt = threading.Event()
        self._max_breakpoints = int(getattr(self.cpu, "max_breakpoints", 4))

    # ------------------------------------------------------------------ running
    def _exit(self, ex: VcpuExit) -> None:
        """A real VM exit: the machine handles it (and the recorder logs it)."""
        self._prepared = False
        try:
            self.machine.handle_exit(ex)
        except MachineStop as stop:
            self.result = stop.result

    def _enter(self, breakpoints: list[int], single_step: bool) -> VcpuExit | None:
        """One entry into the guest; None if the machine ended before it."""
        if not self._prepared:
            try:
                self.machine.prepare_entry()
            except MachineStop as stop:
                self.result = stop.result
                return None
            self._prepared = True
        self.cpu.set_debug(breakpoints, single_step=single_step)
        try:
            return self.machine.seam.run(self.cpu)
        finally:
            self.cpu.set_debug([])

    def _ended(self) -> Stop:
        assert self.result is not None
        return Stop(StopKind.EXITED, status=self.result.status)

    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        if reverse:
            raise TargetError("reverse execution needs a recording (rrvmm replay --gdb)")
        self._interrupt.clear()
        if self.result is not None:
            return self._ended()
        rip = self.cpu.get_regs()["rip"]
        if step or rip in self.breakpoints:
            stop = self._step()  # a continue first steps off the breakpoint it stands on
            if step or stop.kind is not StopKind.STEP:
                return stop
        return self._continue()

    def _step(self) -> Stop:
        while True:
            ex = self._enter([], single_step=True)
            if ex is None:
                return self._ended()
            if ex.kind is ExitKind.DEBUG:
                return Stop(StopKind.STEP)
            if ex.kind is ExitKind.INTR:  # a kick before the instruction ran
                self._exit(ex)
                if self.result is not None:
                    return self._ended()
                continue
            self._exit(ex)  # the instruction made an exit: that completes the step
            return self._ended() if self.result is not None else Stop(StopKind.STEP)

    def _continue(self) -> Stop:
        while True:
            if self._interrupt.is_set():
                self._interrupt.clear()
                return Stop(StopKind.INTERRUPTED)
            ex = self._enter(sorted(self.breakpoints), single_step=False)
            if ex is None:
                return self._ended()
            if ex.kind is ExitKind.DEBUG:
                if ex.rip in self.breakpoints:
                    return Stop(StopKind.BREAKPOINT, ex.rip, hardware=True)
                continue  # a debug trap of no breakpoint of ours: not the guest's business
            self._exit(ex)
            if self.result is not None:
                return self._ended()

    def run_to_end(self) -> RunResult:
        """Run on without a debugger (gdb detached) until the guest ends, as Machine.run."""
        while self.result is None:
            ex = self._enter([], single_step=False)
            if ex is not None:
                self._exit(ex)
        return self.finish()

    def finish(self) -> RunResult:
        """The run's result with the counts ``Machine.run`` fills in."""
        m = self.machine
        if m.serial is not None:
            m.serial.flush()
        result = self.result or RunResult(0, "debugger left")
        result.exits = m.exit_index
        result.rip = self.cpu.exit.rip
        m.stats["exits"] = m.exit_index
        result.stats = dict(m.stats)
        return result

    def kill(self) -> None:
        """gdb's ``kill``: the run ends here (as QEMU quits), not running on."""
        if self.result is None:
            self.result = RunResult(ExitStatus.INTERRUPTED, "killed from gdb")

    def interrupt(self) -> None:
        self._interrupt.set()
        self.cpu.kick()
        if self.machine.serial is not None:
            self.machine.serial.notify_input()  # ends an idle wait of a halted guest

    def position(self) -> Position:
        return Position(self.machine.exit_index, 0)

    # ------------------------------------------------------------------ state
    def read_registers(self) -> dict[str, int]:
        return read_target_registers(self.cpu)

    def _no_writes(self, what: str) -> None:
        if self.recording:
            raise TargetError(
                f"{what} cannot be changed while recording: the trace would not replay"
                " (use rrvmm run --gdb to experiment)"
            )

    def write_register(self, name: str, value: int) -> None:
        self._no_writes("registers")
        if name not in _WRITABLE:
            raise TargetError(f"{name} cannot be changed here")
        self.cpu.set_regs({"rflags" if name == "eflags" else name: value})

    def _translate(self, va: int) -> int:
        s = self.cpu.get_sregs()
        try:
            return translate(va, s["cr0"], s["cr3"], s["cr4"], s["efer"], self.cpu.read_memory)
        except PageFault as e:
            raise TargetError(str(e)) from None

    def read_memory(self, address: int, length: int) -> bytes:
        s = self.cpu.get_sregs()
        try:
            return read_virtual(
                address, length, s["cr0"], s["cr3"], s["cr4"], s["efer"], self.cpu.read_memory
            )
        except PageFault as e:
            raise TargetError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a physical address outside RAM
            raise TargetError(f"cannot read {length} bytes at {address:#x}: {e}") from None

    def write_memory(self, address: int, data: bytes) -> None:
        self._no_writes("memory")
        done = 0
        while done < len(data):
            va = address + done
            n = min(len(data) - done, _PAGE - va % _PAGE)
            pa = self._translate(va)
            if pa + n > self.cpu.memory_size:
                raise TargetError(f"{va:#x} is not guest RAM")
            self.cpu.write_memory(pa, data[done : done + n])
            done += n

    def add_breakpoint(self, address: int, hardware: bool = False) -> None:
        if address not in self.breakpoints and len(self.breakpoints) >= self._max_breakpoints:
            raise TargetError(
                f"at most {self._max_breakpoints} breakpoints at once on a live guest"
            )
        self.breakpoints.add(address)

    def remove_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.discard(address)

    def add_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        raise TargetError("watchpoints need the replay: rrvmm record, then rrvmm replay --gdb")

    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        pass

    def monitor(self, command: str) -> str:
        words = command.split()
        if words and words[0] == "info":
            bps = ", ".join(hex(b) for b in sorted(self.breakpoints)) or "none inserted"
            end = f"\nthe guest ended: {self.result.reason}" if self.result else ""
            return (
                f"live guest on the {self.cpu.name} CPU{' (recording)' if self.recording else ''},"
                f" exit {self.machine.exit_index}\nbreakpoints: {bps}{end}\n"
            )
        return (
            "monitor commands of a live guest: info\n"
            "(going back, goto and watchpoints need the recording: rrvmm replay --gdb)\n"
        )
