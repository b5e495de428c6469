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
import time
from pathlib import Path
from typing import Any

from rrvmm.cpu.backend import ExitKind, InstructionCounting, RecordableCpu, VcpuExit
from rrvmm.cpu.dirty import PAGE
from rrvmm.cpu.mmu import PageFault, read_virtual, translate
from rrvmm.machine.pc import MachineStop, RunResult
from rrvmm.replay.checkpoints import (
    Checkpoint,
    CheckpointPolicy,
    Checkpoints,
    copy_pages,
)
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
from rrvmm.replay.watchpoints import Watchpoints
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
        checkpoint_every: int | None = None,
        checkpoint_memory: int | None = None,
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
        policy = CheckpointPolicy(every_exits=checkpoint_every)
        if checkpoint_memory is not None:
            policy.memory = checkpoint_memory
        self.breakpoints: set[int] = set()
        self.watches = Watchpoints(self._physical)
        self.ended: RunResult | None = None  # the guest's own end, once replay reached it
        self.n: int | None = 0  # single steps since the current exit (None: not counted)
        self._prepared = False
        # the vector rrvmm's 8259 injected for the next entry, until an entry delivers it
        self._entry_vector: int | None = None
        self._watch_hit: Stop | None = None
        self._interrupt = threading.Event()
        self.checkpoints = Checkpoints(policy)
        self._work = 0.0  # seconds of replay work since the last checkpoint (or restore)
        self._work_mark = time.perf_counter()
        self._toward: int | None = None  # the exit a run is going to (denser checkpoints)
        self._mem_at = 0  # the checkpoint memory last equalled (restore accounting)
        self.stats = {"restores": 0, "steps": 0, "bp_hits": 0, "watch_traps": 0}
        # a CPU that counts instructions (and the deliveries that complete none) has an exact
        # clock: a position is a reading of it, reached by a run with an instruction limit
        self.counting = hasattr(self.cpu, "deliveries") and hasattr(self.cpu, "hit_probes")
        self._clock0 = self._clock()  # the clock at the current exit
        self.probe_hits: Any = None  # the CPU's hit probes while a search runs
        self._pending_stop: Stop | None = None  # a probe's hit, for the run loop to end on
        self._take_base()
        self.take_checkpoint()

    # ------------------------------------------------------------------ checkpoints
    def _take_base(self) -> None:
        mem = self.cpu.memory
        for page in range(self.cpu.memory_size // PAGE):
            chunk = mem[page * PAGE : (page + 1) * PAGE]
            if chunk != _ZERO_PAGE:
                self.checkpoints.base[page] = chunk
        for consumer in ("checkpoint", "restore"):
            self.slots.take_dirty(consumer)

    def take_checkpoint(self) -> Checkpoint:
        """Checkpoint the current exit (only at a position with no steps taken)."""
        k = self.machine.exit_index
        if self.n != 0 or self._prepared:
            raise TargetError("checkpoints are taken at an exit, before the guest resumes")
        if k in self.checkpoints:
            return self.checkpoints[k]
        prev = max((i for i in self.checkpoints.order if i < k), default=None)
        dirty = self.slots.take_dirty("checkpoint")
        if prev is not None and prev != self._ckpt_anchor:
            # memory is only known relative to the anchor; diff against it by content
            dirty |= self.checkpoints.pages_between(self._ckpt_anchor, prev)
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
            cp.pages = copy_pages(self.cpu.memory, dirty)
        self.checkpoints.add(cp)
        self._ckpt_anchor = k
        self._work = 0.0
        self.checkpoints.thin(k, {k, self._mem_at, 0})
        return cp

    _ckpt_anchor = 0

    def _restore(self, cp: Checkpoint) -> None:
        self.stats["restores"] += 1
        store = self.checkpoints
        pages = self.slots.take_dirty("restore") | store.pages_between(self._mem_at, cp.exit_index)
        mem = self.cpu.memory
        for page in pages_of(pages):
            mem[page * PAGE : (page + 1) * PAGE] = store.page_at(page, cp.exit_index, _ZERO_PAGE)
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
        self._clock0 = self._clock()
        self.ended = None
        self._work = 0.0

    def _restore_before(self, k: int) -> None:
        """Restore the latest checkpoint at or before exit ``k``."""
        self._restore(self.checkpoints[self.checkpoints.last_at_or_before(k)])

    # ------------------------------------------------------------------ moving forward
    def _after_exit(self) -> None:
        """Bookkeeping at each exit reached going forward."""
        k = self.machine.exit_index
        self.n = 0
        self._clock0 = self._clock()
        self._prepared = False
        self._entry_vector = None
        now = time.perf_counter()
        self._work += now - self._work_mark
        self._work_mark = now
        store = self.checkpoints
        if k in store:
            self.slots.take_dirty("checkpoint")
            self._ckpt_anchor = k
            self._work = 0.0
        elif store.policy.due(k, self._work) or (
            self._toward is not None
            and k <= self._toward
            and store.policy.due_near(k, self._ckpt_anchor, self._toward, self._work)
        ):
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
            w = self.watches.hit(ex.addr, ex.size, "write")
        else:
            self.cpu.complete_read(self.cpu.read_memory(ex.addr, ex.size))
            w = self.watches.hit(ex.addr, ex.size, "read")
        if w is not None and self._watch_hit is None:
            self._watch_hit = Stop(StopKind.WATCHPOINT, w.address, w.kind)
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

    def _physical(self, va: int) -> int | None:
        try:
            return self._translate(va)
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
        if self.counting:
            before = self._clock()
            self.cpu.settle()  # a read waiting for its value completes: one step
            if self._clock() != before:
                return self._stepped()
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
        if self.counting:
            self.n = self._clock() - self._clock0
        elif self.n is not None:
            self.n += 1
        return self._watch_hit

    # ------------------------------------------------------------------ the exact clock
    @property
    def _counting(self) -> InstructionCounting:
        """The CPU as it counts: only the software CPU's paths ask (exact positions)."""
        if self.counter is None:
            raise TargetError("exact positions need a CPU that counts instructions")
        return self.counter

    def _clock(self) -> int:
        """Instructions + deliveries: moves by one per single step (0 on a CPU that counts
        nothing; positions are then counted by stepping)."""
        if not getattr(self, "counting", False):
            return 0
        return self._counting.instructions + self._counting.deliveries

    def _steps_known(self) -> int | None:
        """Steps since the current exit if known without re-executing."""
        return self._clock() - self._clock0 if self.counting else None

    def _run_free(
        self,
        *,
        until_exit: int | None = None,
        stop_at_breakpoints: bool = True,
        stop_on_watch: bool = True,
        skip_breakpoint_at: int | None = None,
        until_count: int | None = None,
    ) -> None:
        """Run forward; returns on reaching ``until_exit`` or, on a CPU that counts, the
        first point where ``instructions`` reaches ``until_count``; _Hit on a stop."""
        while True:
            if self._interrupt.is_set():
                self._interrupt.clear()
                self.n = self._steps_known()
                raise _Hit(Stop(StopKind.INTERRUPTED))
            if self._pending_stop is not None:
                raise _Hit(self._pending_stop)
            if until_exit is not None and self.machine.exit_index >= until_exit:
                return
            if until_count is not None and self._counting.instructions >= until_count:
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
            limit = landing.instructions if counted else None
            if until_count is not None:
                limit = until_count if limit is None else min(limit, until_count)
            self._entry_vector = None  # this entry delivers it
            try:
                ex = (
                    run_to_count(self.cpu, self._counting, limit)
                    if limit is not None
                    else self.cpu.run()
                )
            finally:
                self.cpu.set_debug([])
            self.n = self._steps_known()
            if self.probe_hits is not None and self.probe_hits.error is not None:
                error, self.probe_hits.error = self.probe_hits.error, None
                raise error
            if (
                until_count is not None
                and ex.kind is ExitKind.INTR
                and self._counting.instructions >= until_count
            ):
                return  # there: before a landing due at the same count
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
        if self.counting:
            self.n = self._clock() - self._clock0
            return self.n
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
        elif self.checkpoints.last_at_or_before(k) > cur:
            self._restore_before(k)  # a checkpoint on the way: start there
        self._toward = k
        try:
            self._run_free(until_exit=k, stop_at_breakpoints=False, stop_on_watch=False)
        except _Hit as hit:
            if hit.stop.kind is not StopKind.REPLAY_END:
                raise
        finally:
            self._toward = None

    def goto(self, pos: Position) -> None:
        if self.counting:
            here = self.position()
            # going back, the deliveries now bound those at the target from above
            back = (pos.exit_index, pos.instructions) <= (here.exit_index, here.instructions)
            self._goto_counted(pos, self._counting.deliveries if back else None)
            return
        self.goto_exit(pos.exit_index)
        for _ in range(pos.instructions):
            self.step()

    def _goto_counted(
        self, pos: Position, deliveries_max: int | None, *, from_here: bool = False
    ) -> None:
        """Go to ``pos`` on a counting CPU: a run with an instruction limit.

        The clock is instructions + deliveries, the limit counts instructions only. With an
        upper bound on the deliveries at the target the run stops at or before it, and the
        few deliveries left are single steps; without one it may pass the target, which then
        gives the bound for a second run.
        """
        k = pos.exit_index
        if from_here:  # run on from where the CPU stands (a search pass over a span)
            self._toward = k
            try:
                self._run_counted(k - 1, None)
            finally:
                self._toward = None
        else:
            self.goto_exit(k)
        target = self._clock0 + pos.instructions
        if deliveries_max is None:
            self._run_counted(k, self._counting.instructions + (target - self._clock()))
            if self._clock() <= target or self.machine.exit_index != k:
                return self._step_to(k, target)
            deliveries_max = self._counting.deliveries
            self.goto_exit(k)
        if target - deliveries_max > self._counting.instructions:
            self._run_counted(k, target - deliveries_max)
        self._step_to(k, target)

    def _run_counted(self, k: int, count: int | None) -> None:
        """Run to instruction ``count`` inside interval ``k`` (None: to its end)."""
        try:
            self._run_free(
                until_exit=k + 1, until_count=count, stop_at_breakpoints=False,
                stop_on_watch=False,
            )  # fmt: skip
        except _Hit as hit:
            if hit.stop.kind is not StopKind.REPLAY_END:
                raise

    def _step_to(self, k: int, target: int) -> None:
        while self.machine.exit_index == k and self._clock() < target and not self.at_end:
            self.step()

    # ------------------------------------------------------------------ Target
    def resume(self, *, reverse: bool = False, step: bool = False) -> Stop:
        self._interrupt.clear()  # an interrupt only stops a resume already running
        if self.counting:
            self.slots.protect({})  # probes watch the bytes themselves, not their pages
        else:
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
            if self.counting and len(self.watches):
                return self._continue_counted(rip)
            self._run_free(skip_breakpoint_at=rip)
            return Stop(StopKind.REPLAY_END)
        except _Hit as hit:
            return hit.stop
        except TraceEnded:
            return Stop(StopKind.REPLAY_END)

    def _continue_counted(self, rip: int) -> Stop:
        """Forward to the next breakpoint or watched access, on a counting CPU.

        Watches are probes: the first access notes its exact position and kicks the CPU
        (which stops within a chunk); the engine then goes to just after that access
        instruction, as a data watchpoint reports. Breakpoints stop exactly, by the
        debug registers; whichever came first wins.
        """
        first: list[tuple[int, int, int, int, Stop]] = []

        def on_hit(hit: Any) -> None:
            if not first:
                kind, address, _ = hit.probe
                stop = Stop(StopKind.WATCHPOINT, address, WatchKind(kind))
                first.append(
                    (self.machine.exit_index, self._clock0, hit.instructions + hit.deliveries,
                     hit.deliveries, stop)
                )  # fmt: skip
                self._pending_stop = stop
                self.cpu.kick()

        self.probe_hits = self._counting.hit_probes(on_hit)
        self.probe_hits.arm(self.watches.probes())
        result: Stop = Stop(StopKind.REPLAY_END)
        try:
            self._run_free(skip_breakpoint_at=rip)
        except _Hit as hit:
            result = hit.stop
        finally:
            self.probe_hits.disarm()
            self.probe_hits = None
            self._pending_stop = None
        if not first:
            return result
        k, clock0, clock, deliveries, stop = first[0]
        here = (self.machine.exit_index, self._clock())
        if result.kind is StopKind.BREAKPOINT and here <= (k, clock):
            return result  # the breakpoint came first
        if result.kind is StopKind.INTERRUPTED and here <= (k, clock):
            return result
        self._goto_counted(Position(k, clock - clock0), deliveries)
        self.step()  # the access instruction itself: a watchpoint stops after it
        return stop

    def _reverse_step(self) -> Stop:
        k = self.machine.exit_index
        n = self._count_steps()
        if self.counting and n == 0 and k > 0:
            return self._reverse_step_across_exit(k)
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

    def _reverse_step_across_exit(self, k: int) -> Stop:
        """From exit ``k`` to the last point of the interval before it. An exit that
        completed its instruction (OUT, HLT) came one tick after that point; one that
        stopped before it (IN, MMIO read) or a forced exit came at the same reading."""
        clock, deliveries = self._clock(), self._counting.deliveries
        self.goto_exit(k - 1)
        base = self._clock0
        self._goto_counted(Position(k - 1, clock - base), deliveries)
        if self.machine.exit_index != k - 1 or self._clock() != clock:
            self._goto_counted(Position(k - 1, max(clock - 1 - base, 0)), deliveries)
        return Stop(StopKind.STEP)

    def _reverse_continue(self) -> Stop:
        if self.counting:
            return self._reverse_continue_counted()
        here = self.position()
        end = here
        starts = [i for i in self.checkpoints.order if i <= here.exit_index]
        for start in reversed(starts):
            hits = self._hits_between(Position(start, 0), end)
            if hits:
                pos, stop = hits[-1]
                self.goto(pos)
                return stop
            end = Position(start, 0)
        self.goto(Position(0, 0))
        return Stop(StopKind.REPLAY_BEGIN)

    def _reverse_continue_counted(self) -> Stop:
        """Back to the last breakpoint or watchpoint hit before here, on a counting CPU.

        One forward pass per checkpoint span, newest first: restore the checkpoint, run
        to the end of the span with the hits noted by probes (their exact positions, the
        guest never stopping), and go to the last one; no hit, the span before.
        """
        probes = [("exec", a, 1) for a in sorted(self.breakpoints)]
        probes += self.watches.probes()
        end_exit, end_clock = self.machine.exit_index, self._clock()
        end_deliveries = self._counting.deliveries
        end_n = end_clock - self._clock0
        found: list[tuple[int, int, int, int, Stop]] = []  # exit, its clock, clock, deliveries

        def on_hit(hit: Any) -> None:
            kind, address, _ = hit.probe
            clock = hit.instructions + hit.deliveries
            if kind == "exec":
                stop = Stop(StopKind.BREAKPOINT, address, hardware=True)
            else:
                stop = Stop(StopKind.WATCHPOINT, address, WatchKind(kind))
            found.append((self.machine.exit_index, self._clock0, clock, hit.deliveries, stop))

        if probes:
            self.probe_hits = self._counting.hit_probes(on_hit)
            self.probe_hits.arm(probes)  # hooks outlive restores: armed once for all spans
        try:
            start = end_exit + 1
            while probes and start > 0:
                # found again each time: passes take checkpoints, and thinning drops some
                start = self.checkpoints.last_at_or_before(min(start - 1, end_exit))
                self._restore(self.checkpoints[start])
                found.clear()
                self._goto_counted(Position(end_exit, end_n), end_deliveries, from_here=True)
                hits = [h for h in found if (h[0], h[2]) < (end_exit, end_clock)]
                if hits:
                    self.probe_hits.disarm()
                    k, clock0, clock, deliveries, stop = hits[-1]
                    self._goto_counted(Position(k, clock - clock0), deliveries)
                    return stop
                cpu = self.checkpoints[start].cpu
                end_exit, end_n, end_deliveries = start, 0, int(cpu["deliveries"])
                end_clock = int(cpu["instructions"]) + end_deliveries
        finally:
            if self.probe_hits is not None:
                self.probe_hits.disarm()
            self.probe_hits = None
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
        self.watches.add(address, length, kind)

    def remove_watchpoint(self, address: int, length: int, kind: WatchKind) -> None:
        self.watches.remove(address, length, kind)

    def _apply_watch_protection(self) -> None:
        self.slots.protect(self.watches.page_modes())

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
