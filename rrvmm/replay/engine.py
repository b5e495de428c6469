"""The replay engine: a replayed guest that can be stopped anywhere and run backwards.

It drives the machine exit by exit over the trace (the same ``Replayer`` seam as
``rrvmm replay``), but runs the CPU in pieces in between: single steps, hardware
breakpoints, and exact watchpoints (watched pages are made read-only or absent in KVM, so
guest accesses exit with address and data). A position is (exit index, single steps since
that exit). Going back restores the nearest checkpoint before the target — vCPU state,
device state, the trace cursor and the pages written since — and re-executes forward.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrvmm.cpu.backend import ExitKind, RecordableCpu, VcpuExit
from rrvmm.cpu.dirty import PAGE
from rrvmm.cpu.mmu import PageFault, read_virtual, translate
from rrvmm.machine.pc import MachineStop, RunResult
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind
from rrvmm.replay.fingerprint import (
    Landing,
    memory_fingerprint,
    pages_of,
    regs_fingerprint,
)
from rrvmm.replay.landing import (
    HALTED_LANDING_POLL_NS,
    STUCK_POLL_NS,
    Halt,
    after_kick,
    forge_landing,
    run_to_count,
)
from rrvmm.replay.replayer import TraceEnded
from rrvmm.replay.rig import build_rig
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

__all__ = ["ReplayEngine", "Checkpoint"]

MAX_HW_BREAKPOINTS = 4
_ZERO_PAGE = bytes(PAGE)
_RFLAGS_DEBUG = (1 << 8) | (1 << 16)  # TF, RF: set by debugging, not by the guest


@dataclass
class Checkpoint:
    exit_index: int
    cpu: dict[str, Any]
    machine: dict[str, Any]
    cursor: dict[str, Any]
    accumulators: dict[str, int]
    landing_dirty: int
    serial_len: int
    pages: dict[int, bytes] = field(default_factory=dict)  # changed since the previous one

    @property
    def memory_bytes(self) -> int:
        return len(self.pages) * PAGE


@dataclass
class _Watch:
    address: int
    length: int
    kind: WatchKind

    def overlaps(self, addr: int, size: int) -> bool:
        return addr < self.address + self.length and self.address < addr + size


class _Hit(Exception):
    """Internal: a breakpoint or watchpoint was hit while running."""

    def __init__(self, stop: Stop) -> None:
        self.stop = stop


class ReplayEngine:
    """Implements ``rrvmm.target.ReplayTarget`` over a replay of a trace."""

    def __init__(
        self,
        reader: TraceReader,
        *,
        kernel: str | None = None,
        initrd: str | None = None,
        checkpoint_every: int = 1000,
        kvm_device: str = "/dev/kvm",
        backend: str | None = None,
        disk: str | None = None,
    ) -> None:
        self.reader = reader
        self.total_exits = (reader.footer or {}).get("exits") or (
            reader.chunks[-1].last_exit if reader.chunks else 0
        )
        self._rig = build_rig(
            reader, kernel=kernel, initrd=initrd, disk=disk, backend=backend, kvm_device=kvm_device
        )
        self.cpu: RecordableCpu = self._rig.cpu
        self.counter = self.cpu.instruction_counter()  # landings by count, where it counts
        self.serial = self._rig.serial
        self.replayer = self._rig.replayer
        self.machine = self._rig.machine
        self.probe = self.replayer.probe
        self.slots = self.cpu.slots
        self.every = checkpoint_every
        self.breakpoints: set[int] = set()
        self.watches: list[_Watch] = []
        self.ended: RunResult | None = None  # the guest's own end, once replay reached it
        self.n: int | None = 0  # single steps since the current exit (None: not counted)
        self._prepared = False
        # the vector rrvmm's 8259 injected for the next entry, until an entry delivers it
        self._entry_vector: int | None = None
        self._watch_hit: Stop | None = None
        self._interrupt = threading.Event()
        self.checkpoints: dict[int, Checkpoint] = {}
        self._order: list[int] = []  # checkpoint exit indices, ascending
        self._base: dict[int, bytes] = {}  # non-zero pages at power-on
        self._mem_at = 0  # the checkpoint memory last equalled (restore accounting)
        self.stats = {"restores": 0, "steps": 0, "bp_hits": 0, "watch_traps": 0}
        self._take_base()
        self.take_checkpoint()

    # ------------------------------------------------------------------ checkpoints
    def _take_base(self) -> None:
        mem = self.cpu.memory
        for page in range(self.cpu.memory_size // PAGE):
            chunk = mem[page * PAGE : (page + 1) * PAGE]
            if chunk != _ZERO_PAGE:
                self._base[page] = chunk
        for consumer in ("checkpoint", "restore"):
            self.slots.take_dirty(consumer)

    def take_checkpoint(self) -> Checkpoint:
        """Checkpoint the current exit (only at a position with no steps taken)."""
        k = self.machine.exit_index
        if self.n != 0 or self._prepared:
            raise TargetError("checkpoints are taken at an exit, before the guest resumes")
        if k in self.checkpoints:
            return self.checkpoints[k]
        prev = max((i for i in self._order if i < k), default=None)
        dirty = self.slots.take_dirty("checkpoint")
        if prev is not None and prev != self._ckpt_anchor:
            # memory is only known relative to the anchor; diff against it by content
            dirty |= self._pages_between(self._ckpt_anchor, prev)
        cp = Checkpoint(
            exit_index=k,
            cpu=self.cpu.save_state(),
            machine=self.machine.snapshot(),
            cursor=self.replayer.cursor(),
            accumulators={"landing": self.slots.accumulators().get("landing", 0)},
            landing_dirty=self.probe.dirty,
            serial_len=len(self.serial.transcript),
        )
        if prev is not None:
            mem = self.cpu.memory
            for page in pages_of(dirty):
                cp.pages[page] = mem[page * PAGE : (page + 1) * PAGE]
        self.checkpoints[k] = cp
        self._order = sorted(self.checkpoints)
        self._ckpt_anchor = k
        return cp

    _ckpt_anchor = 0

    def _pages_between(self, a: int, b: int) -> int:
        """Pages whose contents may differ between checkpoints at exits a and b."""
        lo, hi = min(a, b), max(a, b)
        bits = 0
        for i in self._order:
            if lo < i <= hi:
                for page in self.checkpoints[i].pages:
                    bits |= 1 << page
        return bits

    def _page_at(self, page: int, k: int) -> bytes:
        for i in reversed(self._order):
            if i <= k and page in self.checkpoints[i].pages:
                return self.checkpoints[i].pages[page]
        return self._base.get(page, _ZERO_PAGE)

    def _restore(self, cp: Checkpoint) -> None:
        self.stats["restores"] += 1
        pages = self.slots.take_dirty("restore") | self._pages_between(self._mem_at, cp.exit_index)
        mem = self.cpu.memory
        for page in pages_of(pages):
            mem[page * PAGE : (page + 1) * PAGE] = self._page_at(page, cp.exit_index)
        self.cpu.restore_state(cp.cpu)
        self.machine.restore(cp.machine)
        self.replayer.set_cursor(cp.cursor)
        self.slots.set_accumulators(
            {"landing": cp.accumulators["landing"], "checkpoint": 0, "restore": 0}
        )
        self.probe.dirty = cp.landing_dirty
        del self.serial.transcript[cp.serial_len :]
        self._mem_at = cp.exit_index
        self._ckpt_anchor = cp.exit_index
        self._prepared = False
        self._entry_vector = None
        self.n = 0
        self.ended = None

    def _restore_before(self, k: int) -> None:
        """Restore the latest checkpoint at or before exit ``k``."""
        best = max(i for i in self._order if i <= k)
        self._restore(self.checkpoints[best])

    # ------------------------------------------------------------------ moving forward
    def _after_exit(self) -> None:
        """Bookkeeping at each exit reached going forward."""
        k = self.machine.exit_index
        self.n = 0
        self._prepared = False
        self._entry_vector = None
        if k in self.checkpoints:
            self.slots.take_dirty("checkpoint")
            self._ckpt_anchor = k
        elif self.every and k % self.every == 0:
            self.take_checkpoint()

    def _handle_exit(self, ex: VcpuExit) -> None:
        try:
            self.machine.handle_exit(ex)
        except MachineStop as stop:
            self.ended = stop.result
        self._after_exit()

    def _prepare(self) -> bool:
        """Between-exit work once per interval; True if an interrupt was injected.

        The injected vector is kept (``_entry_vector``) until an entry delivers it: a
        ``step`` after a ``_run_free`` that prepared the interval (a resume from a stop
        right after an exit) must still stop at the handler, not single-step past it.
        """
        if self._prepared:
            return False
        before = self.machine.stats["injected"]
        self.machine.prepare_entry()
        # interrupt windows are not asked for in replay: where they open is not reproducible
        self.cpu.request_interrupt_window(False)
        self._prepared = True
        injected = self.machine.stats["injected"] != before
        self._entry_vector = self.machine.last_vector if injected else None
        return injected

    @property
    def at_end(self) -> bool:
        return self.ended is not None or self.replayer.next_exit() is None

    def _take_landing(self, landing: Landing) -> None:
        """The CPU stands at the recorded forced exit: report that exit.

        The vCPU really ran there, so its interrupt state is current (unlike ``forge_exit``,
        which is for exits where the guest never ran).
        """
        ex = self.cpu.exit
        ex.kind, ex.rip, ex.addr, ex.size, ex.count = landing.kind, landing.rip, 0, 0, 1
        ex.data, ex.detail = b"", ""
        self.probe.passed()
        self._handle_exit(ex)

    def _land_without_progress(self) -> bool:
        landing = self.replayer.next_landing()
        if landing is not None and not landing.progressed:
            self._handle_exit(forge_landing(self.cpu, self.probe, landing))
            return True
        return False

    def _check_end(self) -> None:
        if self.at_end:
            raise _Hit(Stop(StopKind.REPLAY_END))

    def _mmio(self, ex: VcpuExit) -> bool:
        """An MMIO exit on a watched page: emulate the access, note watch hits.

        Returns True if it was such an exit. Hits go to ``self._watch_hit``; the access
        itself completes when the vCPU runs (or settles) next.
        """
        if ex.kind not in (ExitKind.MMIO_READ, ExitKind.MMIO_WRITE):
            return False
        mode = self.slots.mode_of(ex.addr)
        if mode is None:
            return False
        self.stats["watch_traps"] += 1
        if ex.kind is ExitKind.MMIO_WRITE:
            self.cpu.write_memory(ex.addr, ex.data)
            self.slots.mark_dirty(ex.addr, ex.size)
            kinds = (WatchKind.WRITE, WatchKind.ACCESS)
        else:
            self.cpu.complete_read(self.cpu.read_memory(ex.addr, ex.size))
            kinds = (WatchKind.READ, WatchKind.ACCESS)
        for w in self.watches:
            if w.kind in kinds and self._watch_hits(w, ex.addr, ex.size):
                if self._watch_hit is None:
                    self._watch_hit = Stop(StopKind.WATCHPOINT, w.address, w.kind)
                break
        return True

    def _finish_access(self) -> None:
        """Complete the instruction whose watched-page access was just emulated.

        Finishing it may take more accesses to watched pages (read-modify-write); those
        are emulated too. A step that made such an access ends here: KVM does not report
        the single-step trap of an instruction completed this way.
        """
        while True:
            ex = self.cpu.settle()
            if ex is None:
                return
            if not self._mmio(ex):
                raise TargetError(f"unexpected {ex.kind.name} exit finishing a watched access")

    def _watch_hits(self, w: _Watch, gpa: int, size: int) -> bool:
        pa = self._watch_phys(w)
        return pa is not None and gpa < pa + w.length and pa < gpa + size

    def _watch_phys(self, w: _Watch) -> int | None:
        try:
            return self._translate(w.address)
        except PageFault:
            return None

    def step(self) -> Stop | None:
        """Execute one instruction (or the delivery of an injected interrupt).

        Returns the watchpoint stop if the instruction accessed a watched location.
        """
        self._watch_hit = None
        if self._land_without_progress():
            return
        self._check_end()
        self._prepare()
        landing = self.replayer.next_landing()
        if landing is not None and self.probe.matches(landing):
            self._take_landing(landing)
            return None
        vector, self._entry_vector = self._entry_vector, None  # this step's entry takes it
        if (lines := self.machine.kernel_lines) is not None:
            vector = lines.deliverable_vector()  # KVM's 8259 delivers at the next entry
            if vector is None and lines.chip.halted():
                raise TargetError(
                    "replay diverged: the guest is halted here, the recording goes on"
                )
            if vector is None and lines.chip.at_hlt():
                lines.chip.halt()  # a single-stepped HLT would block inside KVM
                return self._stepped()
        if vector is not None:
            # the interrupt is delivered at entry: stop at the handler's first instruction
            # (a single step would run it before reporting)
            self.cpu.set_debug([self._interrupt_handler(vector)])
        else:
            self.cpu.set_debug([], single_step=True)
        try:
            while True:
                ex = self.cpu.run()
                if ex.kind is ExitKind.DEBUG:
                    break
                if self._mmio(ex):
                    self._finish_access()
                    break
                if ex.kind is ExitKind.INTR:
                    continue
                self.cpu.set_debug([])
                self._handle_exit(ex)
                return self._watch_hit
        finally:
            self.cpu.set_debug([])
        return self._stepped()

    def _stepped(self) -> Stop | None:
        self.stats["steps"] += 1
        if self.n is not None:
            self.n += 1
        return self._watch_hit

    def _run_free(
        self,
        *,
        until_exit: int | None = None,
        stop_at_breakpoints: bool = True,
        stop_on_watch: bool = True,
        skip_breakpoint_at: int | None = None,
    ) -> None:
        """Run forward; returns on reaching ``until_exit``; _Hit on a stop."""
        while True:
            if self._interrupt.is_set():
                self._interrupt.clear()
                self.n = None
                raise _Hit(Stop(StopKind.INTERRUPTED))
            if until_exit is not None and self.machine.exit_index >= until_exit:
                return
            if self._land_without_progress():
                continue
            self._check_end()
            self._prepare()
            landing = self.replayer.next_landing()
            counted = self.probe.counted(landing)
            bps = sorted(self.breakpoints) if stop_at_breakpoints else []
            arm = ([landing.rip] if landing and not counted else []) + bps
            if len(set(arm)) > MAX_HW_BREAKPOINTS:
                self._step_checking(bps, skip_breakpoint_at)
                skip_breakpoint_at = None
                continue
            rip = (
                self.cpu.get_regs()["rip"]
                if skip_breakpoint_at is not None or landing is not None
                else None
            )
            if skip_breakpoint_at is not None and rip == skip_breakpoint_at:
                skip_breakpoint_at = None
                if landing is None or not self.probe.matches(landing):
                    hit = self.step()  # step off the breakpoint we are stopped at
                    if hit is not None and stop_on_watch:
                        raise _Hit(hit)
                    continue
            if landing is not None and rip == landing.rip and self.probe.matches(landing):
                self._take_landing(landing)
                continue
            if self.machine.kernel_lines is not None:
                # a halted landing is no breakpoint hit: look at the vCPU now and then
                halted = landing is not None and landing.halted
                self.replayer.poll_vcpu(
                    self.cpu, HALTED_LANDING_POLL_NS if halted else STUCK_POLL_NS
                )
            self.cpu.set_debug(sorted(set(arm)))
            self._entry_vector = None  # this entry delivers it
            try:
                ex = (
                    run_to_count(self.cpu, self.counter, landing.instructions)
                    if counted and self.counter is not None
                    else self.cpu.run()
                )
            finally:
                self.cpu.set_debug([])
            self.n = None
            if counted and ex.kind is ExitKind.INTR and self.probe.matches(landing):
                self._take_landing(landing)
                continue
            if ex.kind is ExitKind.DEBUG:
                if landing is not None and ex.rip == landing.rip and self.probe.matches(landing):
                    self._take_landing(landing)
                    continue
                if ex.rip in self.breakpoints and stop_at_breakpoints:
                    self.stats["bp_hits"] += 1
                    raise _Hit(Stop(StopKind.BREAKPOINT, ex.rip, hardware=True))
                hit = self.step()  # the landing address, not the landing state: step over it
                if hit is not None and stop_on_watch:
                    raise _Hit(hit)
                continue
            if self._mmio(ex):
                if self._watch_hit is not None and stop_on_watch:
                    stop, self._watch_hit = self._watch_hit, None
                    self._finish_access()
                    raise _Hit(stop)
                self._watch_hit = None
                continue
            if ex.kind is ExitKind.INTR:
                if (lines := self.machine.kernel_lines) is not None:
                    # a halted landing is no breakpoint hit: it is found when kicked
                    halt = after_kick(lines.chip, self.probe, landing)
                    if halt is Halt.LANDED:
                        self._take_landing(landing)
                    elif halt is Halt.STUCK:
                        raise TargetError(
                            "replay diverged: the guest halted where the recording went on"
                        )
                continue
            self._handle_exit(ex)

    def _step_checking(self, bps: list[int], skip: int | None) -> None:
        """More breakpoints than debug registers: single-step and compare RIP."""
        first = True
        while True:
            rip = self.cpu.get_regs()["rip"]
            if rip in bps and not (first and rip == skip):
                self.stats["bp_hits"] += 1
                raise _Hit(Stop(StopKind.BREAKPOINT, rip))
            first = False
            k = self.machine.exit_index
            hit = self.step()
            if hit is not None:
                raise _Hit(hit)
            if self.machine.exit_index != k or self._interrupt.is_set():
                return

    # ------------------------------------------------------------------ positions
    def position(self) -> Position:
        return Position(self.machine.exit_index, self._count_steps())

    def _count_steps(self) -> int:
        """Steps since the current exit, counting them by re-execution if not known.

        The state is recognised by its registers and the contents of every page written
        since the last restore: a superset of what changed since the exit, and earlier
        points of the same run only ever wrote a subset of it, so equal hashes over it
        mean equal state.
        """
        if self.n is not None:
            return self.n
        regs = self.cpu.get_regs()
        want_regs = (regs_fingerprint(regs), regs["rflags"] & ~_RFLAGS_DEBUG)
        pages = self.slots.accumulators().get("restore", 0)
        want_mem = memory_fingerprint(pages, self.cpu.ram_page)
        k = self.machine.exit_index
        self.goto_exit(k)
        n = 0
        while True:
            cur = self.cpu.get_regs()
            if (regs_fingerprint(cur), cur["rflags"] & ~_RFLAGS_DEBUG) == want_regs and (
                memory_fingerprint(pages, self.cpu.ram_page) == want_mem
            ):
                self.n = n
                return n
            self.step()
            n += 1
            if self.machine.exit_index != k:
                raise TargetError("lost the current position while counting steps")

    def goto_exit(self, k: int) -> None:
        """Go to exit ``k`` (just after it, before the guest resumes)."""
        if k > self.total_exits:
            raise TargetError(f"the recording has {self.total_exits} exits")
        cur = self.machine.exit_index
        if not (cur < k or (cur == k and self.n == 0 and not self._prepared)):
            self._restore_before(k)
        elif k - cur > self.every and any(cur < i <= k for i in self._order):
            self._restore_before(k)
        try:
            self._run_free(until_exit=k, stop_at_breakpoints=False, stop_on_watch=False)
        except _Hit as hit:
            if hit.stop.kind is not StopKind.REPLAY_END:
                raise

    def goto(self, pos: Position) -> None:
        self.goto_exit(pos.exit_index)
        for _ in range(pos.instructions):
            self.step()

    # ------------------------------------------------------------------ Target
    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        self._interrupt.clear()  # an interrupt only stops a resume already running
        self._apply_watch_protection()
        try:
            if reverse:
                return self._reverse_step() if step else self._reverse_continue()
            if step:
                k = self.machine.exit_index
                self._check_end()
                self.step()
                if self.ended is not None and self.machine.exit_index != k:
                    return Stop(StopKind.REPLAY_END)
                return Stop(StopKind.STEP)
            rip = self.cpu.get_regs()["rip"]
            self._run_free(skip_breakpoint_at=rip)
            return Stop(StopKind.REPLAY_END)
        except _Hit as hit:
            return hit.stop
        except TraceEnded:
            return Stop(StopKind.REPLAY_END)

    def _reverse_step(self) -> Stop:
        k = self.machine.exit_index
        n = self._count_steps()
        if n > 0:
            self.goto(Position(k, n - 1))
            return Stop(StopKind.STEP)
        if k == 0:
            return Stop(StopKind.REPLAY_BEGIN)
        # the instruction before exit k: count the steps of the interval before it
        self.goto_exit(k - 1)
        m = 0
        while self.machine.exit_index == k - 1:
            self.step()
            m += 1
        self.goto(Position(k - 1, max(m - 1, 0)))
        return Stop(StopKind.STEP)

    def _reverse_continue(self) -> Stop:
        here = self.position()
        end = here
        starts = [i for i in self._order if i <= here.exit_index]
        for start in reversed(starts):
            hits = self._hits_between(Position(start, 0), end)
            if hits:
                pos, stop = hits[-1]
                self.goto(pos)
                return stop
            end = Position(start, 0)
        self.goto(Position(0, 0))
        return Stop(StopKind.REPLAY_BEGIN)

    def _hits_between(self, start: Position, end: Position) -> list[tuple[Position, Stop]]:
        """Every breakpoint/watchpoint stop in [start, end).

        Running freely finds which exit intervals hold a hit; only those are then
        single-stepped, so positions come out exact and in order.
        """
        self.goto(start)
        intervals: list[int] = []
        while self.machine.exit_index < end.exit_index:
            k = self.machine.exit_index
            try:
                self._run_free(until_exit=k + 1)
                continue
            except _Hit as hit:
                if hit.stop.kind is StopKind.INTERRUPTED:
                    raise
                if hit.stop.kind is StopKind.REPLAY_END:
                    break
            intervals.append(k)
            try:  # finish the interval, not stopping again
                self._run_free(until_exit=k + 1, stop_at_breakpoints=False, stop_on_watch=False)
            except _Hit as hit:
                if hit.stop.kind is not StopKind.REPLAY_END:
                    raise
                break
        if end.instructions and end.exit_index not in intervals:
            intervals.append(end.exit_index)
        found: list[tuple[Position, Stop]] = []
        for k in intervals:
            self.goto_exit(k)
            n = 0
            limit = end.instructions if k == end.exit_index else None
            while self.machine.exit_index == k and (limit is None or n < limit):
                if self.at_end:
                    break
                here = (k, n) >= (start.exit_index, start.instructions)
                rip = self.cpu.get_regs()["rip"]
                if rip in self.breakpoints and here:
                    found.append((Position(k, n), Stop(StopKind.BREAKPOINT, rip, hardware=True)))
                hit = self.step()
                if hit is not None and here:
                    # going backwards, a watchpoint stops before the access: at the instruction
                    found.append((Position(k, n), hit))
                n += 1
        return found

    def interrupt(self) -> None:
        self._interrupt.set()
        self.cpu.kick()

    # --- registers and memory ---
    def read_registers(self) -> dict[str, int]:
        regs = self.cpu.get_regs()
        sregs = self.cpu.get_sregs()
        out = {n: regs.get(n, 0) for n in REGISTER_NAMES if n in regs}
        out["eflags"] = regs["rflags"]
        for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
            out[seg] = sregs[seg]["selector"]
        out["fs_base"] = sregs["fs"]["base"]
        out["gs_base"] = sregs["gs"]["base"]
        out["k_gs_base"] = self.cpu.get_msrs([0xC0000102]).get(0xC0000102, 0)
        for cr in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer"):
            out[cr] = sregs[cr]
        return out

    def write_register(self, name: str, value: int) -> None:
        raise TargetError("a replay is read-only: registers cannot be changed")

    def write_memory(self, address: int, data: bytes) -> None:
        raise TargetError("a replay is read-only: memory cannot be changed")

    def _translate(self, va: int) -> int:
        s = self.cpu.get_sregs()
        return translate(va, s["cr0"], s["cr3"], s["cr4"], s["efer"], self.cpu.read_memory)

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

    # --- breakpoints and watchpoints ---
    def add_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.add(address)

    def remove_breakpoint(self, address: int, hardware: bool = False) -> None:
        self.breakpoints.discard(address)

    def add_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watches.append(_Watch(address, length, kind))

    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watches = [
            w for w in self.watches if (w.address, w.length, w.kind) != (address, length, kind)
        ]

    def _apply_watch_protection(self) -> None:
        pages: dict[int, str] = {}
        for w in self.watches:
            pa = self._watch_phys(w)
            if pa is None:
                continue
            mode = "ro" if w.kind is WatchKind.WRITE else "none"
            for page in range(pa // PAGE, (pa + w.length - 1) // PAGE + 1):
                if pages.get(page) != "none":
                    pages[page] = mode
        self.slots.protect(pages)

    # --- interrupts ---
    def _interrupt_handler(self, vector: int) -> int:
        """The entry address of ``vector``'s handler from the guest IDT."""
        s = self.cpu.get_sregs()
        idt = s["idt"]
        long_mode = bool(s["efer"] & (1 << 10))
        size = 16 if long_mode else 8
        raw = self.read_memory(idt["base"] + vector * size, size)
        low = int.from_bytes(raw[0:2], "little") | (int.from_bytes(raw[6:8], "little") << 16)
        if long_mode:
            low |= int.from_bytes(raw[8:12], "little") << 32
        return low

    # --- the recording (ReplayTarget) ---
    @property
    def end_reason(self) -> str | None:
        return self.ended.reason if self.ended is not None else None

    @property
    def cpu_name(self) -> str:
        return self.cpu.name

    @property
    def trace_path(self) -> str:
        return str(self.reader.path)

    def recorded_kernel(self) -> RecordedImage | None:
        kernel = self.reader.header.get("images", {}).get("kernel")
        return RecordedImage(kernel["path"], kernel["sha256"]) if kernel else None

    def symbol_file(self, scratch: Path) -> Path | None:
        from rrvmm.replay.symbol_files import find_symbol_file

        return find_symbol_file(self.reader, scratch, elf64=False)

    def recorded_exits(self, start: int, count: int) -> list[RecordedExit]:
        out: list[RecordedExit] = []
        if count <= 0:
            return out
        for idx, ev in self.reader.events(start):
            if idx < start or ev[0] != EventKind.EXIT:
                continue
            out.append(RecordedExit(idx, ExitKind(ev[1]).name, ev[2], ev[3], ev[4], ev[5]))
            if len(out) >= count:
                break
        return out

    def serial_output(self, last: int | None = None) -> bytes:
        transcript = self.serial.transcript
        return bytes(transcript if last is None else transcript[-last:])

    def code_bits(self) -> int:
        s = self.cpu.get_sregs()
        cs = s["cs"]
        if cs.get("l"):
            return 64
        if not s["cr0"] & 1:
            return 16
        return 32 if cs.get("db") else 16

    # --- monitor ---
    def monitor(self, command: str) -> str:
        from rrvmm.replay.monitor import run_monitor

        return run_monitor(self, command)

    def close(self) -> None:
        self._rig.close()
