"""The software CPU backend: the same exits as the KVM backend, from unicorn 2.1.4.

The guest runs in unicorn's count mode, in chunks that end at multiples of ``CHUNK``
guest instructions (absolute positions, so every run of the same guest stops at the same
places). Between chunks the backend answers kicks, the instruction limit and the interrupt
window. Whatever a KVM vCPU would exit for stops the chunk early: IN/OUT, MMIO, HLT, a
breakpoint, a triple fault. Exceptions, software interrupts, SYSCALL and SYSENTER also stop
it; they are handled in Python (``soft.events``: unicorn never delivers them) and the run
goes on without an exit, as on KVM.

Instruction positions are exact and repeatable: ``instructions`` counts every instruction
the guest completed. A ``rep`` string instruction counts once per iteration plus once for
its final RCX=0 check (QEMU's model: after the last iteration RIP is still at the ``rep``).
A faulting instruction does not count; INT n, INT3 and SYSCALL do. RDTSC/RDTSCP return
``guest_tsc(instructions, tsc_offset)`` (``cpu.guest_clock``: one tick per instruction at
1 GHz; MSR 0x10 writes and halts move the offset): a virtual clock that advances inside a
chunk and repeats exactly on replay.

Exit RIPs match KVM: after the instruction for OUT, MMIO writes and HLT; at the
instruction for IN and MMIO reads, which complete (with the value given to
``complete_read``) on the next ``run()`` or ``settle()``. ``rep outs``/``rep ins`` exit
once per iteration (``count`` is always 1). An IRQ window opens at the first chunk or event
(exception, SYSCALL) boundary with IF=1 and no interrupt shadow; chunks are
``WINDOW_CHUNK`` instructions while a window is requested. ``kick()`` takes effect at the
next boundary (at most ``CHUNK`` instructions, 0.2-0.5 ms) and, unlike KVM's signal, is
not lost when it arrives between two ``run()`` calls. An injected interrupt is delivered
on entry even while debugging (KVM's BLOCKIRQ only holds back its in-kernel irqchip), and
a single step after it runs the handler's first instruction. See ``soft/`` for the parts.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable

from rrvmm.cpu.backend import (
    BackendError,
    ExitKind,
    InstructionCounting,
    KernelIrqchip,
    VcpuExit,
)
from rrvmm.cpu.cpuid import filter_cpuid
from rrvmm.cpu.guest_clock import guest_tsc
from rrvmm.soft import layout as L
from rrvmm.soft.dirty import DirtyLog
from rrvmm.soft.engine import Engine
from rrvmm.soft.events import Delivery
from rrvmm.soft.hooks import Hooks
from rrvmm.soft.mmu import HIGH_BASE, PhysMemory, Walker
from rrvmm.soft.probes import HitProbes, ProbeHit
from rrvmm.soft.runner import CHUNK, WINDOW_CHUNK, RunLoop
from rrvmm.soft.slots import SoftSlots
from rrvmm.soft.state import CpuState

__all__ = ["SoftBackend", "CHUNK", "WINDOW_CHUNK", "MAX_PHYS"]

MAX_PHYS = 1 << 48  # physical addresses above this are not mapped at all
_HF_IRQ_BLOCK = L.HF_INHIBIT_IRQ_MASK


class SoftBackend(RunLoop):
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
        self.regfile = CpuState(e)
        self.dirty = DirtyLog(self.memory, memory_size)
        self.instructions = 0
        self.deliveries = 0  # interrupts, and exceptions of uncompleted instructions (runner)
        self.instruction_limit: int | None = None
        self.tsc_offset = 0
        self.exit = VcpuExit()
        self.hooks = Hooks(e, list(cpuid_rows or []), self._tsc_in_chunk)
        self.hooks.is_ram = lambda gpa: self.phys.offset(gpa) is not None
        self.slots = SoftSlots(e, self.phys, self.dirty, self.hooks.cover_pages)
        self._map_memory(mmio_windows)
        self._kicked = False
        self._event_since_count = False  # an exception was delivered since the last count
        self._window = False
        self._pending_vector: int | None = None
        self._pending_in: tuple | None = None  # an IN exit waiting for complete_read
        self._in_data: bytes | None = None
        self._mmio_read: tuple[int, int] | None = None  # an MMIO read waiting for its data
        self._queued: list[tuple[int, int, int]] = []  # MMIO stores still to report
        self._breakpoints: frozenset[int] = frozenset()
        self._single_step = False
        self._step_debug = False  # a single step ended in an exit: DEBUG comes next
        self._shutdown = False  # a triple fault happened outside run() (in settle)
        self._reset_cpu()

    # --- set-up ---
    def _map_memory(self, windows: list[tuple[int, int]] | None) -> None:
        e, h = self.engine, self.hooks
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
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
            h.cover_mmio(gpa, size)
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
        return guest_tsc(self.instructions + started, self.tsc_offset)

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
        return self.regfile.get_regs()

    def set_regs(self, regs: dict[str, int]) -> None:
        self.regfile.set_regs(regs)

    def get_sregs(self) -> dict[str, object]:
        return self.regfile.get_sregs(self._pending_vector)

    def set_sregs(self, sregs: dict[str, object]) -> None:
        vector = self.regfile.set_sregs(sregs)
        if vector is not None:
            self._pending_vector = vector

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        tsc = guest_tsc(self.instructions, self.tsc_offset)
        return self.regfile.get_msrs(indices, tsc)

    def set_msrs(self, values: dict[int, int]) -> None:
        if L.MSR_TSC in values:
            self.tsc_offset = values[L.MSR_TSC] - guest_tsc(self.instructions, 0)
        self.regfile.set_msrs(values)

    # --- capabilities ---
    def instruction_counter(self) -> InstructionCounting | None:
        return self

    def kernel_irqchip(self) -> KernelIrqchip | None:
        return None  # rrvmm's 8259 is the only interrupt controller here

    def set_instruction_limit(self, n: int | None) -> None:
        """Make ``run()`` return INTR when ``instructions`` reaches ``n`` (absolute; once)."""
        self.instruction_limit = n

    # --- interrupts ---
    def interrupts_enabled(self) -> bool:
        e = self.engine
        return (
            self._pending_vector is None
            and bool(e.eflags.value & L.IF_MASK)
            and not e.hflags.value & _HF_IRQ_BLOCK
        )

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
            self.hooks.set_breakpoints(bps)
            self._breakpoints = bps
        self._single_step = single_step
        if not single_step:
            self._step_debug = False

    def hit_probes(self, on_hit: Callable[[ProbeHit], None]) -> HitProbes:
        """Breakpoints and watchpoints that note their hits' exact positions and let the
        guest run on (``soft.probes``): the reverse debugger's one-pass search."""
        return HitProbes(self, on_hit)

    def forge_exit(self, kind: ExitKind, rip: int) -> VcpuExit:
        """Report an exit that happened without guest progress (replay of a lost entry).

        Its interrupt state is the CPU's own at this point, as KVM reports it for the
        recorded kick: an interrupt injected before and still pending blocks another
        (``interrupts_enabled``), a guest kicked right after an I/O exit may take one.
        """
        self.settle()  # the access a kick right after an I/O exit found finished
        ex = self.exit
        ex.kind, ex.rip, ex.addr, ex.size, ex.count, ex.data = kind, rip, 0, 0, 1, b""
        ex.detail = ""
        return ex

    # --- dirty pages ---
    def enable_dirty_log(self) -> None:
        """Log guest writes per page from now on (see ``dirty_bitmap``)."""
        self.slots.enable_dirty_log()

    def dirty_bitmap(self, consumer: str = "landing") -> int:
        """Pages written since ``consumer`` last asked: bit n = page n of RAM."""
        return self.slots.take_dirty(consumer)

    # --- whole-CPU state (checkpoints) ---
    def save_state(self) -> dict[str, object]:
        """The vCPU state as plain data; pending reads are settled first, as on KVM."""
        self.settle()
        e = self.engine
        return {
            "env": ctypes.string_at(e.env, L.ENV_SIZE),
            "instructions": self.instructions,
            "deliveries": self.deliveries,
            "tsc_offset": self.tsc_offset,
            "apic_base": self.regfile.apic_base,
            "pending_vector": self._pending_vector,
            "queued": list(self._queued),
            "shutdown": self._shutdown,
        }

    def restore_state(self, state: dict[str, object]) -> None:
        """Back to a ``save_state`` result. Memory may have been rewritten underneath, so
        all translated code is dropped."""
        e = self.engine
        env = state["env"]
        assert isinstance(env, bytes) and len(env) == L.ENV_SIZE
        ctypes.memmove(e.env, env, L.ENV_SIZE)
        self.instructions = int(state["instructions"])  # type: ignore[arg-type]
        self.deliveries = int(state.get("deliveries", 0))  # type: ignore[arg-type]
        self.tsc_offset = int(state["tsc_offset"])  # type: ignore[arg-type]
        self.regfile.apic_base = int(state["apic_base"])  # type: ignore[arg-type]
        self._pending_vector = state["pending_vector"]  # type: ignore[assignment]
        self._queued = list(state["queued"])  # type: ignore[call-overload]
        self._shutdown = bool(state["shutdown"])
        self._pending_in = self._in_data = self._mmio_read = None
        self.hooks.mmio_answers.clear()
        self.hooks.swallow.clear()
        self._kicked = self._step_debug = False
        self.instruction_limit = None
        e.flush_tlb()
        e.flush_tb()

    def supported_cpuid(self) -> list[tuple[int, ...]]:
        """unicorn's own CPU model as CPUID rows, through the determinism filter: the
        table to record with when there is no KVM to ask."""
        return filter_cpuid(self.hooks.native_rows())

    # --- running ---
    def close(self) -> None:
        """Release the engine; guest RAM goes with the last reference to this object."""
        self.dirty.close()
        self.engine.close()


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
