"""The software CPU backend: the same exits as the KVM backend, from unicorn 2.1.4.

The guest runs in unicorn's count mode, in chunks that end at multiples of ``CHUNK``
guest instructions (absolute positions, so every run of the same guest stops at the same
places). Between chunks the backend answers kicks, the instruction limit and the interrupt
window. Whatever a KVM vCPU would exit for stops the chunk early: IN/OUT, MMIO, HLT, a
breakpoint, a triple fault. Exceptions, software interrupts and SYSCALL also stop it, are
handled in Python (``soft.events``: unicorn never delivers them) and the chunk goes on.

Instruction positions are exact: ``instructions`` counts every instruction the guest
completed, with each iteration of a ``rep`` string instruction counted as one (as QEMU's
icount does). A faulting instruction does not count; INT n, INT3 and the instruction a
single-step trap follows do. RDTSC returns ``instructions * TSC_PER_INSTRUCTION`` plus an
offset: a virtual clock that advances inside a chunk and repeats exactly on replay.

Exit RIPs match KVM: after the instruction for OUT, MMIO writes and HLT; at the
instruction for IN and MMIO reads, which complete (with the value given to
``complete_read``) on the next ``run()``. ``rep outs``/``rep ins`` exit once per
iteration (``count`` is always 1). An IRQ window opens at the first chunk boundary with
IF=1 and no interrupt shadow; chunks are ``WINDOW_CHUNK`` instructions while a window is
requested. ``kick()`` takes effect at the next chunk boundary (at most ``CHUNK``
instructions, ~0.5 ms). See ``soft/`` for the parts.
"""

from __future__ import annotations

import mmap

from .backend import BackendError, ExitKind, VcpuExit
from .soft import layout as L
from .soft.dirty import DirtyLog
from .soft.engine import Engine
from .soft.events import Delivery, TripleFault
from .soft.hooks import (
    STOP_BP,
    STOP_EXC,
    STOP_IN,
    STOP_MMIO_READ,
    STOP_MMIO_WRITE,
    STOP_OUT,
    STOP_SYSCALL,
    STOP_UD,
    Hooks,
)
from .soft.mmu import HIGH_BASE, GuestFault, PhysMemory, Walker
from .soft.state import CpuState

__all__ = ["SoftBackend", "CHUNK", "WINDOW_CHUNK", "TSC_PER_INSTRUCTION", "MAX_PHYS"]

CHUNK = 1 << 15
WINDOW_CHUNK = 1 << 10
TSC_PER_INSTRUCTION = 1
MAX_PHYS = 1 << 48  # physical addresses above this are not mapped at all
_UC_ERR_READ_PROT = 13
_HF_IRQ_BLOCK = L.HF_INHIBIT_IRQ_MASK


class SoftBackend:
    """One vCPU in unicorn with ``memory_size`` bytes of RAM (below 3 GiB, rest at 4 GiB).

    ``mmio_windows`` lists the physical ranges whose accesses exit as MMIO_READ/WRITE;
    None (the default) makes every non-RAM address exit, as on KVM. Addresses outside the
    windows read as all ones and ignore writes.
    """

    name = "soft"
    max_breakpoints = 4

    def __init__(
        self,
        memory_size: int,
        cpuid_rows: list[tuple[int, ...]] | None = None,
        mmio_windows: list[tuple[int, int]] | None = None,
    ) -> None:
        if memory_size <= 0 or memory_size % 4096:
            raise BackendError("guest memory size must be a positive multiple of 4 KiB")
        self.memory_size = memory_size
        self.memory = mmap.mmap(-1, memory_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.engine = e = Engine()
        self.phys = PhysMemory(self.memory, memory_size)
        self.walker = Walker(self.phys, e)
        self.events = Delivery(e, self.walker)
        self.cpu = CpuState(e)
        self.dirty = DirtyLog(self.memory, memory_size)
        self._dirty_acc: dict[str, int] = {}
        self.instructions = 0
        self.instruction_limit: int | None = None
        self.tsc_offset = 0
        self.exit = VcpuExit()
        self.hooks = Hooks(e, list(cpuid_rows or []), self._tsc_in_chunk)
        self._map_memory(mmio_windows)
        self._kicked = False
        self._window = False
        self._forged = False
        self._pending_vector: int | None = None
        self._pending_in: tuple | None = None  # an IN exit waiting for complete_read
        self._in_data: bytes | None = None
        self._mmio_read: tuple[int, int] | None = None  # an MMIO read waiting for its data
        self._queued: list[tuple[int, int, int]] = []  # MMIO stores still to report
        self._breakpoints: frozenset[int] = frozenset()
        self._single_step = False
        self._step_debug = False  # a single step ended in an exit: DEBUG comes next
        self._reset_cpu()

    # --- set-up ---
    def _map_memory(self, windows: list[tuple[int, int]] | None) -> None:
        e, h = self.engine, self.hooks
        base = self.engine_addr = _buffer_address(self.memory)
        low = self.phys.low
        e.map_ram(0, low, base)
        holes = [(low, HIGH_BASE - low)]
        high_end = HIGH_BASE
        if self.memory_size > low:
            e.map_ram(HIGH_BASE, self.memory_size - low, base + low)
            high_end = HIGH_BASE + self.memory_size - low
        holes.append((high_end, MAX_PHYS - high_end))
        holes = [(a, n) for a, n in holes if n > 0]
        exits = holes if windows is None else sorted(windows)
        for gpa, size in exits:
            e.map_mmio(gpa, size, h.mmio_read(gpa), h.mmio_write(gpa))
        for gpa, size in _subtract(holes, exits):
            e.map_mmio(gpa, size, h.open_bus, h.ignore)
            e.uc.mem_protect(gpa, size, e.unicorn.UC_PROT_READ | e.unicorn.UC_PROT_WRITE)

    def _reset_cpu(self) -> None:
        """Power-on-like state; ``Machine.boot`` sets the real entry state."""
        e = self.engine
        e.cr[0] = 0x6000_0010
        e.cr[4] = 0
        e.efer.value = 0
        e.eflags.value = 2
        e.update_hflags()
        e.flush_tlb()

    def _tsc_in_chunk(self, started: int) -> int:
        return (self.instructions + started) * TSC_PER_INSTRUCTION + self.tsc_offset

    # --- memory ---
    def read_memory(self, gpa: int, size: int) -> bytes:
        off = self.phys.offset(gpa, size)
        if off is None:
            raise BackendError(f"guest physical range {gpa:#x}+{size:#x} is not RAM")
        return self.memory[off : off + size]

    def write_memory(self, gpa: int, data: bytes) -> None:
        off = self.phys.offset(gpa, len(data))
        if off is None:
            raise BackendError(f"guest physical range {gpa:#x}+{len(data):#x} is not RAM")
        self.memory[off : off + len(data)] = data
        self.engine.invalidate_code(off, len(data))

    def ram_page(self, page: int) -> bytes:
        """Page ``page`` of the RAM buffer (host offset order, as ``dirty_bitmap`` counts)."""
        off = page << 12
        return self.memory[off : off + 4096]

    # --- registers ---
    def set_cpuid(self, entries: list[tuple[int, ...]]) -> None:
        self.hooks.set_cpuid(list(entries))

    def get_regs(self) -> dict[str, int]:
        return self.cpu.get_regs()

    def set_regs(self, regs: dict[str, int]) -> None:
        self.cpu.set_regs(regs)

    def get_sregs(self) -> dict[str, object]:
        return self.cpu.get_sregs(self._pending_vector)

    def set_sregs(self, sregs: dict[str, object]) -> None:
        vector = self.cpu.set_sregs(sregs)
        if vector is not None:
            self._pending_vector = vector

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        return self.cpu.get_msrs(indices, self.instructions * TSC_PER_INSTRUCTION + self.tsc_offset)

    def set_msrs(self, values: dict[int, int]) -> None:
        if L.MSR_TSC in values:
            self.tsc_offset = values[L.MSR_TSC] - self.instructions * TSC_PER_INSTRUCTION
        self.cpu.set_msrs(values)

    def set_instruction_limit(self, n: int | None) -> None:
        """Make ``run()`` return INTR when ``instructions`` reaches ``n`` (absolute; once)."""
        self.instruction_limit = n

    # --- interrupts ---
    def interrupts_enabled(self) -> bool:
        e = self.engine
        return (
            not self._forged
            and self._pending_vector is None
            and not (self._breakpoints or self._single_step)
            and bool(e.eflags.value & L.IF_MASK)
            and not e.hflags.value & _HF_IRQ_BLOCK
        )

    def _can_take_interrupt(self) -> bool:
        e = self.engine
        return bool(e.eflags.value & L.IF_MASK) and not e.hflags.value & _HF_IRQ_BLOCK

    def inject_interrupt(self, vector: int) -> None:
        if self._pending_vector is not None:
            raise BackendError("an injected interrupt is still pending")
        self._pending_vector = vector

    def injection_pending(self) -> bool:
        return self._pending_vector is not None

    def request_interrupt_window(self, on: bool) -> None:
        self._window = on

    def kick(self) -> None:
        self._kicked = True

    # --- debugging ---
    def set_debug(self, breakpoints: list[int], single_step: bool = False) -> None:
        """Execution breakpoints (stop before the instruction) and/or single-stepping."""
        if len(breakpoints) > self.max_breakpoints:
            raise BackendError(f"at most {self.max_breakpoints} hardware breakpoints")
        bps = frozenset(breakpoints)
        if bps != self._breakpoints:
            self.hooks.set_breakpoints(sorted(bps))
            self._breakpoints = bps
        self._single_step = single_step

    def forge_exit(self, kind: ExitKind, rip: int) -> VcpuExit:
        """Report an exit that happened without guest progress (replay of a lost entry)."""
        ex = self.exit
        ex.kind, ex.rip, ex.addr, ex.size, ex.count, ex.data = kind, rip, 0, 0, 1, b""
        ex.detail = ""
        self._forged = True
        return ex

    # --- dirty pages ---
    def enable_dirty_log(self) -> None:
        """Log guest writes per page from now on (see ``dirty_bitmap``)."""
        self.dirty.enable()

    def dirty_bitmap(self, consumer: str = "landing") -> int:
        """Pages written since ``consumer`` last asked: bit n = page n of RAM."""
        bits = self.dirty.fetch()
        acc = self._dirty_acc
        acc.setdefault(consumer, 0)
        if bits:
            for name in acc:
                acc[name] |= bits
        out, acc[consumer] = acc[consumer], 0
        return out

    # --- running ---
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

    def run(self) -> VcpuExit:
        self._forged = False
        try:
            return self._run()
        except TripleFault:
            return self._exit(ExitKind.SHUTDOWN, detail="triple fault")

    def _exit(self, kind: ExitKind, addr: int = 0, size: int = 0, data: bytes = b"",
              detail: str = "") -> VcpuExit:  # fmt: skip
        ex = self.exit
        ex.kind, ex.addr, ex.size, ex.count, ex.data = kind, addr, size, 1, data
        ex.rip, ex.detail = self.engine.rip.value, detail
        return ex

    def _run(self) -> VcpuExit:
        e = self.engine
        if self._queued:
            gpa, size, value = self._queued.pop(0)
            return self._exit(ExitKind.MMIO_WRITE, gpa, size, value.to_bytes(size, "little"))
        if self._pending_in is not None:
            self._finish_in()
        if self.hooks.mmio_answers:
            ex = self._complete_instruction()
            if ex is not None:
                return ex
        if self._step_debug:
            self._step_debug = False
            return self._exit(ExitKind.DEBUG, e.rip.value, detail="single-step")
        self._deliver_pending()
        if self._breakpoints and e.rip.value in self._breakpoints:
            return self._exit(ExitKind.DEBUG, e.rip.value, detail="breakpoint")
        while True:
            if self._kicked:
                self._kicked = False
                return self._exit(ExitKind.INTR)
            limit = self.instruction_limit
            if limit is not None and self.instructions >= limit:
                self.instruction_limit = None
                return self._exit(ExitKind.INTR, detail="instruction limit")
            if self._window and self._can_take_interrupt():
                return self._exit(ExitKind.IRQ_WINDOW)
            self._deliver_pending()
            step = self._single_step
            if step:
                budget = 1
            else:
                chunk = WINDOW_CHUNK if self._window else CHUNK
                end = (self.instructions // chunk + 1) * chunk
                if limit is not None and limit < end:
                    end = limit
                budget = end - self.instructions
            ex = self._chunk(budget)
            if ex is not None:
                if step and ex.kind is not ExitKind.DEBUG:
                    self._step_debug = ex.kind not in (ExitKind.SHUTDOWN, ExitKind.INTERNAL_ERROR)
                return ex
            if step:
                return self._exit(ExitKind.DEBUG, e.rip.value, detail="single-step")

    def _deliver_pending(self) -> None:
        vector = self._pending_vector
        if vector is None or self._breakpoints or self._single_step:
            return
        if not self._can_take_interrupt():
            return
        self._pending_vector = None
        self.events.deliver(vector, external=True)

    def _chunk(self, budget: int) -> VcpuExit | None:
        """Run up to ``budget`` instructions; an exit, or None to go on."""
        e, h = self.engine, self.hooks
        h.stop = None
        err = e.start(budget)
        if h.error is not None:
            exc, h.error = h.error, None
            raise exc
        stop = h.stop
        if stop is None:
            counter = e.counter.value
            if err:
                self.instructions += max(counter - 1, 0)
                return self._exit(ExitKind.INTERNAL_ERROR, detail=e.strerror(err))
            if counter == budget + 1:
                self.instructions += budget
                return None
            self.instructions += counter  # HLT (or MWAIT) ended the chunk, after it
            return self._exit(ExitKind.HLT)
        h.stop = None
        kind, counter = stop[0], stop[1]
        if kind == STOP_OUT:
            self.instructions += counter
            _, _, port, size, value = stop
            return self._exit(ExitKind.IO_OUT, port, size, value.to_bytes(size, "little"))
        if kind == STOP_EXC:
            self._exception(stop)
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
            except GuestFault as f:  # #UD: SYSCALL disabled; it did not execute
                self.instructions -= 1
                e.rip.value = stop[2]
                self.events.deliver(f.vector, f.error_code)
            return None
        if kind == STOP_UD:
            self.instructions += counter - 1
            self.events.deliver(L.EXC_UD)
            return None
        if kind == STOP_BP:
            self.instructions += counter - 1
            return self._exit(ExitKind.DEBUG, stop[2], detail="breakpoint")
        if kind == STOP_MMIO_READ:
            self.instructions += counter - 1
            self._mmio_read = (stop[2], stop[3])
            return self._exit(ExitKind.MMIO_READ, stop[2], stop[3])
        if kind == STOP_MMIO_WRITE:  # stopped right after the store: finish the instruction
            self.instructions += counter - 1
            h.swallow.append(stop[2:])
            return self._complete_instruction()
        raise AssertionError(f"unknown stop {stop}")

    def _exception(self, stop: tuple) -> None:
        _, counter, vector, error_code, is_int, retaddr = stop
        if is_int or vector == L.EXC_DB:  # traps: the instruction completed
            self.instructions += counter
        elif vector == L.EXC_PF and retaddr == 0:  # code fetch, before anything of it ran
            self.instructions += counter
        else:  # a fault: the instruction did not complete
            self.instructions += counter - 1
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
        self._chunk(1)
        self.hooks.in_answer = None

    def _complete_instruction(self) -> VcpuExit | None:
        """Run the instruction that met MMIO again, serving its reads from the answers and
        swallowing the stores it already made; report those stores when it completes."""
        e, h = self.engine, self.hooks
        while True:
            h.mmio_cursor = h.swallow_cursor = 0
            h.stop = None
            err = e.start(1)
            stop, h.stop = h.stop, None
            if h.error is not None:
                exc, h.error = h.error, None
                raise exc
            if stop is None:
                if err or e.counter.value != 2:
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
            return self._exit(ExitKind.INTERNAL_ERROR, detail=f"MMIO instruction stopped: {stop}")
        stores = h.swallow[:]
        h.mmio_answers.clear()
        h.swallow.clear()
        if not stores:
            return None
        self._queued.extend(stores[1:])
        gpa, size, value = stores[0]
        return self._exit(ExitKind.MMIO_WRITE, gpa, size, value.to_bytes(size, "little"))

    def close(self) -> None:
        """Release the engine; guest RAM goes with the last reference to this object."""
        self.dirty.close()
        self.engine.close()


def _buffer_address(buf: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _subtract(holes: list[tuple[int, int]], cut: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of ``holes`` not covered by ``cut`` (both lists of (start, size))."""
    out = []
    for start, size in holes:
        pieces = [(start, start + size)]
        for c0, n in cut:
            c1 = c0 + n
            nxt = []
            for a, b in pieces:
                if c1 <= a or c0 >= b:
                    nxt.append((a, b))
                    continue
                if a < c0:
                    nxt.append((a, c0))
                if c1 < b:
                    nxt.append((c1, b))
            pieces = nxt
        out += [(a, b - a) for a, b in pieces if b > a]
    return out
