"""The soft backend's ``run()``: guest code in count-mode chunks, exits as KVM reports them.

Bookkeeping of ``instructions`` (see ``soft_backend``): unicorn's counter counts each
instruction (each ``rep`` iteration, and the final RCX=0 check of a ``rep``) when it
starts. A chunk of budget n that ran out reads n+1 (the next instruction was counted,
then stopped before running). A callback's stop records the counter at that moment, which
includes the instruction in progress: OUT, SYSCALL and traps completed it; a fault, a
breakpoint, an IN or an MMIO access did not (yet). An instruction-fetch page fault is
raised while translating, before any instruction of the block is counted.

Why count mode, although it costs most of the guest's time: ``count`` makes unicorn call
its counter before every instruction, and translated code then recomputes EFLAGS before
each call (``helper_cc_compute_all`` + ``helper_read_eflags``: a third of a Linux boot's
samples, ``bench/profile_soft.py``; a register-only loop runs ~40x faster without it). It
is the only exact instruction count unicorn 2.1.4 offers without native code of our own:
a block hook would count translation blocks (a native one costs ~1/15 of count mode), but
it is handed a block's address and byte size, not its instruction count, and a block that
stops part-way (I/O, a fault) would need its executed prefix counted. Every position, the
virtual TSC, the PIT and the replayer's landings are built on this exact count.

``deliveries`` counts what changes the guest's state without completing an instruction:
an exception for an instruction that did not complete (so did not count) and an external
interrupt delivered. ``instructions + deliveries`` moves by exactly one per single step (a
step into an interrupt stops at its handler's first instruction), a clock on which every
point of the guest's run has its own position (the replay engine's).
"""

from __future__ import annotations

from rrvmm.cpu.backend import ExitKind, VcpuExit
from rrvmm.soft import layout as L
from rrvmm.soft.events import TripleFault
from rrvmm.soft.hooks import (
    STOP_BP,
    STOP_EXC,
    STOP_IN,
    STOP_MMIO_READ,
    STOP_MMIO_WRITE,
    STOP_OUT,
    STOP_SYSCALL,
    STOP_SYSENTER,
    STOP_UD,
)
from rrvmm.soft.mmu import GuestFault

__all__ = ["RunLoop", "CHUNK", "WINDOW_CHUNK"]

CHUNK = 1 << 15
WINDOW_CHUNK = 1 << 10
_HF_IRQ_BLOCK = L.HF_INHIBIT_IRQ_MASK


class RunLoop:
    """Mixin of ``SoftBackend``: everything that runs guest code."""

    # provided by SoftBackend
    engine: object
    hooks: object
    events: object
    walker: object
    exit: VcpuExit
    instructions: int
    instruction_limit: int | None
    deliveries: int

    def _can_take_interrupt(self) -> bool:
        e = self.engine
        return bool(e.eflags.value & L.IF_MASK) and not e.hflags.value & _HF_IRQ_BLOCK

    def complete_read(self, data: bytes) -> None:
        if self._pending_in is not None:
            self._in_data = bytes(data)
        elif self._mmio_read is not None:
            gpa, size = self._mmio_read
            value = int.from_bytes(bytes(data[:size]).ljust(size, b"\0"), "little")
            self.hooks.mmio_answers.append((gpa, size, value))
            self._mmio_read = None
        else:
            raise AssertionError("complete_read without a pending read exit")

    def settle(self) -> None:
        """Finish a pending IN/MMIO read now (KVM applies it on the next KVM_RUN).

        Runs at most the one instruction that was waiting for the value; MMIO stores it
        makes are reported by the next ``run()``.
        """
        try:
            if self._pending_in is not None:
                self._finish_in()
            if self.hooks.mmio_answers:
                self._complete_instruction()
        except TripleFault:
            self._shutdown = True

    def run(self) -> VcpuExit:
        try:
            return self._run()
        except TripleFault:
            return self._exit(ExitKind.SHUTDOWN, detail="triple fault")

    def _exit(
        self, kind: ExitKind, addr: int = 0, size: int = 0, data: bytes = b"", detail: str = ""
    ) -> VcpuExit:
        ex = self.exit
        ex.kind, ex.addr, ex.size, ex.count, ex.data = kind, addr, size, 1, data
        ex.rip, ex.detail = self.engine.rip.value, detail
        return ex

    def _queued_exit(self) -> VcpuExit:
        gpa, size, value = self._queued.pop(0)
        return self._exit(ExitKind.MMIO_WRITE, gpa, size, value.to_bytes(size, "little"))

    def _run(self) -> VcpuExit:
        e = self.engine
        if self._shutdown:
            raise TripleFault
        if self._pending_in is not None:
            self._finish_in()
        if self.hooks.mmio_answers:
            ex = self._complete_instruction()
            if ex is not None:
                return ex
        if self._queued:
            return self._queued_exit()
        if self._step_debug:
            self._step_debug = False
            return self._exit(ExitKind.DEBUG, e.rip.value, detail="single-step")
        self._deliver_pending()
        if self._breakpoints:
            if e.rip.value in self._breakpoints:
                return self._exit(ExitKind.DEBUG, e.rip.value, detail="breakpoint")
        elif not self._single_step:
            self.hooks.drop_breakpoints()
        while True:
            limit = self.instruction_limit
            if limit is not None and self.instructions >= limit:
                self.instruction_limit = None
                return self._exit(ExitKind.INTR, detail="instruction limit")
            # A kick or a window is not honoured right after an exception was delivered:
            # the count there equals the count before the faulting instruction, and a
            # replay stopping at that count (by instruction limit) stops before the fault.
            # One more instruction is run first (``settle_one`` below).
            after_event = self._event_since_count
            if not after_event:
                if self._kicked:
                    self._kicked = False
                    return self._exit(ExitKind.INTR)
                if self._window and self._can_take_interrupt():
                    return self._exit(ExitKind.IRQ_WINDOW)
            self._event_since_count = False
            settle_one = after_event and (self._kicked or self._window)
            self._deliver_pending()
            step = self._single_step
            if step or settle_one:
                budget = 1
            else:
                chunk = WINDOW_CHUNK if self._window else CHUNK
                end = (self.instructions // chunk + 1) * chunk
                if limit is not None and limit < end:
                    end = limit
                budget = end - self.instructions
            ex = self._chunk(budget)
            if ex is None and self._queued:
                ex = self._queued_exit()
            if ex is not None:
                if step and ex.kind is not ExitKind.DEBUG:
                    self._step_debug = ex.kind not in (ExitKind.SHUTDOWN, ExitKind.INTERNAL_ERROR)
                return ex
            if step:
                return self._exit(ExitKind.DEBUG, e.rip.value, detail="single-step")

    def _deliver_pending(self) -> None:
        vector = self._pending_vector
        if vector is None or not self._can_take_interrupt():
            return  # delivered at the first boundary where it can be
        self._pending_vector = None
        self.events.deliver(vector, external=True)
        self.deliveries += 1

    def _start(self, budget: int) -> tuple[int, tuple | None]:
        e, h = self.engine, self.hooks
        h.stop = None
        err = e.start(budget)
        stop, h.stop = h.stop, None
        if h.error is not None:
            exc, h.error = h.error, None
            raise exc
        return err, stop

    def _chunk(self, budget: int) -> VcpuExit | None:
        """Run up to ``budget`` instructions; an exit, or None to go on."""
        e = self.engine
        err, stop = self._start(budget)
        if stop is None:
            counter = e.counter.value
            if err:
                self.instructions += max(counter - 1, 0)
                return self._exit(ExitKind.INTERNAL_ERROR, detail=e.strerror(err))
            if counter == budget + 1:
                self.instructions += budget
                return None
            self.instructions += counter  # HLT (or MWAIT) ended the chunk, after it
            if not self._after_halt():
                return self._exit(ExitKind.INTERNAL_ERROR, detail="emulation stopped early")
            return self._exit(ExitKind.HLT)
        kind, counter = stop[0], stop[1]
        if kind == STOP_OUT:
            self.instructions += counter
            _, _, port, size, value = stop
            return self._exit(ExitKind.IO_OUT, port, size, value.to_bytes(size, "little"))
        if kind == STOP_EXC:
            self._exception(stop)
            self._event_since_count = True
            return None
        if kind == STOP_IN:
            self.instructions += counter - 1
            _, _, port, size, at, rax = stop
            next_rip = e.rip.value
            if next_rip != at:  # IN completed with a dummy value: take it back
                e.regs[L.R_EAX] = rax
                e.rip.value = at
            self._pending_in = (port, size, at, next_rip if next_rip != at else None)
            self._in_data = None
            return self._exit(ExitKind.IO_IN, port, size)
        if kind == STOP_SYSCALL:
            self.instructions += counter
            try:
                self.events.syscall(e.rip.value)
            except GuestFault as f:  # #UD: SYSCALL is disabled; it did not execute
                self.instructions -= 1
                self.deliveries += 1
                e.rip.value = stop[2]
                self.events.deliver(f.vector, f.error_code)
            return None
        if kind == STOP_SYSENTER:
            try:
                self.events.sysenter()
                self.instructions += counter
            except GuestFault as f:
                self.instructions += counter - 1
                self.deliveries += 1
                e.rip.value = stop[2]
                self.events.deliver(f.vector, f.error_code)
            return None
        if kind == STOP_UD:
            self.instructions += counter - 1
            self.deliveries += 1
            self.events.deliver(L.EXC_UD)
            return None
        if kind == STOP_BP:
            self.instructions += counter - 1
            return self._exit(ExitKind.DEBUG, stop[2], detail="breakpoint")
        if kind == STOP_MMIO_READ:
            self.instructions += counter - 1
            self._mmio_read = (stop[2], stop[3])
            return self._exit(ExitKind.MMIO_READ, stop[2], stop[3])
        if kind == STOP_MMIO_WRITE:  # the instruction was abandoned at its store
            self.instructions += counter - 1
            self.hooks.swallow.append(stop[2:])
            return self._complete_instruction()
        raise AssertionError(f"unknown stop {stop}")

    def _after_halt(self) -> bool:
        """A consistency check, not the decision: the only early end of a chunk without a
        callback is HLT/MWAIT, which leaves RIP right after the instruction."""
        e = self.engine
        la = e.segment(L.SEGS + L.SEG_SIZE * L.R_CS)[1] + e.rip.value
        try:
            if self.walker.read(la - 1, 1) == b"\xf4":
                return True
            return self.walker.read(la - 3, 3) == b"\x0f\x01\xc9"
        except GuestFault:
            return False

    def _exception(self, stop: tuple) -> None:
        _, counter, vector, error_code, is_int, retaddr = stop
        if is_int or vector == L.EXC_DB:  # traps: the instruction completed
            self.instructions += counter
        elif vector == L.EXC_PF and retaddr == 0:  # code fetch, before anything of it ran
            self.instructions += counter
            self.deliveries += 1
        else:  # a fault: the instruction did not complete
            self.instructions += counter - 1
            self.deliveries += 1
        has_code = vector in L.EXC_WITH_ERROR_CODE and not is_int
        self.events.deliver(vector, error_code if has_code else None, software=bool(is_int))

    def _finish_in(self) -> None:
        """Complete the IN the last exit reported, with the bytes from ``complete_read``."""
        port, size, at, next_rip = self._pending_in
        data, self._pending_in, self._in_data = self._in_data, None, None
        e = self.engine
        if data is None or e.rip.value != at:
            return  # never answered, or the registers were changed meanwhile: run it again
        value = int.from_bytes(bytes(data[:size]).ljust(size, b"\0"), "little")
        if next_rip is not None:  # IN AL/AX/EAX: write the register, step over it
            rax = e.regs[L.R_EAX]
            if size == 4:
                rax = value
            else:
                mask = (1 << (8 * size)) - 1
                rax = (rax & ~mask) | value
            e.regs[L.R_EAX] = rax
            e.rip.value = next_rip
            self.instructions += 1
            return
        self.hooks.in_answer = (port, size, value)  # INS: run the iteration again
        try:
            err, stop = self._start(1)
        finally:
            self.hooks.in_answer = None
        if stop is None and not err and e.counter.value == 2:
            self.instructions += 1
        elif stop is not None and stop[0] == STOP_EXC:
            self._exception(stop)

    def _complete_instruction(self) -> VcpuExit | None:
        """Run the instruction that met MMIO (or a protected page) again, serving its reads
        from the answers and letting through the stores it already made; those stores are
        then queued as MMIO_WRITE exits (RIP after the instruction, as on KVM)."""
        e, h = self.engine, self.hooks
        while True:
            h.mmio_cursor = h.swallow_cursor = 0
            err, stop = self._start(1)
            if stop is None:
                if err or e.counter.value != 2:
                    h.mmio_answers.clear()
                    h.swallow.clear()
                    return self._exit(ExitKind.INTERNAL_ERROR, detail="MMIO instruction failed")
                self.instructions += 1
                break
            if stop[0] == STOP_MMIO_WRITE:
                h.swallow.append(stop[2:])
                continue
            if stop[0] == STOP_MMIO_READ:
                self._mmio_read = (stop[2], stop[3])
                return self._exit(ExitKind.MMIO_READ, stop[2], stop[3])
            if stop[0] == STOP_EXC:  # it faulted after its MMIO accesses
                self._exception(stop)
                break
            h.mmio_answers.clear()
            h.swallow.clear()
            return self._exit(ExitKind.INTERNAL_ERROR, detail=f"MMIO instruction stopped: {stop}")
        self._queued.extend(h.swallow)
        h.mmio_answers.clear()
        h.swallow.clear()
        return None
