"""The interface every CPU backend (KVM, software) implements, and the exits it reports.

The run loop sees only ``CpuBackend``: one reused ``VcpuExit`` per backend (allocation-free
on the hot path), register files as plain dicts with the names gdb and kvm_regs use, and a
handful of calls for interrupt delivery. A backend owns guest RAM as one host buffer.

What only some backends can do is a capability of its own, so that callers are typed
against what they use instead of sniffing attributes:

- ``RecordableCpu``: what record, replay and the debugger need (dirty log, whole-vCPU
  state, forged exits, hardware breakpoints). Both backends are; ``make_backend`` returns one.
- ``InstructionCounting``: exact instruction counts and a stop at a given count (the
  software CPU). ``CpuBackend.instruction_counter()`` hands it out, or None.
- ``KernelIrqchip``: KVM's in-kernel 8259 (``--irqchip kernel``): input lines and its raw
  registers, which ``rrvmm.machine.interrupts`` interprets.
  ``CpuBackend.kernel_irqchip()`` hands it out, or None.

Each is asked for once, where its user is built, and kept in a typed field.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CpuBackend",
    "ExitKind",
    "GPR_NAMES",
    "GuestSlots",
    "InstructionCounting",
    "KernelIrqchip",
    "PicRegisters",
    "QueuedInterrupt",
    "RecordableCpu",
    "SEGMENT_NAMES",
    "VcpuExit",
]

GPR_NAMES = "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
SEGMENT_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
SEGMENT_FIELDS = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g")
CONTROL_NAMES = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")


class BackendError(RuntimeError):
    """The CPU backend failed (a refused ioctl, an unsupported CPU state, ...)."""


class BackendUnavailable(BackendError):
    """The backend cannot be used on this host at all (no /dev/kvm, no permission)."""


class ExitKind(IntEnum):
    """Why the vCPU stopped. Values are part of the trace format: append only."""

    IO_IN = 1
    IO_OUT = 2
    MMIO_READ = 3
    MMIO_WRITE = 4
    HLT = 5
    IRQ_WINDOW = 6
    INTR = 7  # kicked by the host (signal / immediate_exit) or a count limit reached
    SHUTDOWN = 8  # triple fault
    INTERNAL_ERROR = 9
    FAIL_ENTRY = 10
    DEBUG = 11  # single-step or hardware breakpoint
    SYSTEM_EVENT = 12
    UNKNOWN = 13


class VcpuExit:
    """The last exit. Reused by the backend; copy what you keep.

    For IO: ``addr`` is the port, ``size`` the access width, ``count`` > 1 for rep ins/outs,
    ``data`` the bytes written (``size * count`` bytes). For reads, answer with
    ``CpuBackend.complete_read``. ``rip`` is the guest RIP at the exit (after the instruction
    for IO/MMIO/HLT).
    """

    __slots__ = ("kind", "addr", "size", "count", "data", "rip", "detail")

    def __init__(self) -> None:
        self.kind = ExitKind.UNKNOWN
        self.addr = 0
        self.size = 0
        self.count = 1
        self.data = b""
        self.rip = 0
        self.detail = ""

    def __repr__(self) -> str:
        return (
            f"VcpuExit({self.kind.name}, addr={self.addr:#x}, size={self.size}, "
            f"count={self.count}, data={self.data.hex()}, rip={self.rip:#x})"
        )


class CpuBackend(Protocol):
    """One vCPU and its guest RAM."""

    name: str
    memory_size: int
    exit: VcpuExit

    def read_memory(self, gpa: int, size: int) -> bytes: ...
    def write_memory(self, gpa: int, data: bytes) -> None: ...

    def set_cpuid(self, entries: list[tuple[int, ...]]) -> None: ...
    def get_regs(self) -> dict[str, int]: ...
    def set_regs(self, regs: dict[str, int]) -> None: ...
    def get_sregs(self) -> dict[str, object]: ...
    def set_sregs(self, sregs: dict[str, object]) -> None: ...

    def run(self) -> VcpuExit: ...
    def complete_read(self, data: bytes) -> None: ...

    def interrupts_enabled(self) -> bool:
        """True when an external interrupt injected now would be taken (IF=1, no shadow)."""
        ...

    def inject_interrupt(self, vector: int) -> None: ...
    def request_interrupt_window(self, on: bool) -> None: ...
    def kick(self) -> None:
        """Make a running ``run()`` return soon with ``ExitKind.INTR``; any thread."""
        ...

    def close(self) -> None: ...

    # --- capabilities: each is this CPU seen through a narrower interface, or None ---
    def instruction_counter(self) -> InstructionCounting | None:
        """This CPU as an exact instruction counter, or None where it cannot count."""
        ...

    def kernel_irqchip(self) -> KernelIrqchip | None:
        """The interrupt controller inside the backend, or None where rrvmm's 8259 is it."""
        ...


class GuestSlots(Protocol):
    """Guest RAM as the debugger sees it: dirty pages per reader, protected pages."""

    def host_offset(self, gpa: int, size: int) -> int | None:
        """Where ``gpa``..+``size`` sits in the RAM buffer, or None if it is not all RAM."""
        ...

    def take_dirty(self, consumer: str) -> int:
        """Pages written since ``consumer`` last took (bit n = page n of the RAM buffer)."""
        ...

    def mark_dirty(self, host_offset: int, size: int) -> None:
        """A write rrvmm performed on the guest's behalf."""
        ...

    def accumulators(self) -> dict[str, int]: ...
    def set_accumulators(self, acc: dict[str, int]) -> None: ...

    def protect(self, pages: dict[int, str]) -> None:
        """Make ``pages`` (page number -> 'ro' or 'none') exit on access, the rest RAM."""
        ...

    def mode_of(self, gpa: int) -> str | None:
        """The protection ``protect`` gave the page holding ``gpa``, or None."""
        ...


class RecordableCpu(CpuBackend, Protocol):
    """A CPU that can be recorded, replayed and debugged.

    Landings need the dirty log and page contents, checkpoints the whole vCPU state and
    RAM, replay of a lost entry a forged exit, the debugger hardware breakpoints.
    """

    @property
    def memory(self) -> mmap.mmap:
        """Guest RAM, in host offset order (the order dirty bitmaps count pages in)."""
        ...

    @property
    def slots(self) -> GuestSlots: ...

    def ram_page(self, page: int) -> bytes:
        """Page ``page`` of the RAM buffer (host offset order, as ``dirty_bitmap`` counts)."""
        ...

    def enable_dirty_log(self) -> None:
        """Log guest writes per page from now on (see ``dirty_bitmap``)."""
        ...

    def dirty_bitmap(self, consumer: str = "landing") -> int:
        """Pages the guest wrote since ``consumer`` last asked: bit n = page n of RAM."""
        ...

    def get_msrs(self, indices: list[int]) -> dict[int, int]: ...
    def set_msrs(self, values: dict[int, int]) -> None: ...

    def settle(self) -> VcpuExit | None:
        """Finish a pending IN/MMIO read without running further guest code; an exit it
        needed on the way (a read-modify-write's second access) is returned."""
        ...

    def save_state(self) -> dict[str, object]:
        """The whole vCPU state as plain data (checkpoints copy it)."""
        ...

    def restore_state(self, state: dict[str, object]) -> None: ...

    def injection_pending(self) -> bool:
        """An injected interrupt is still queued: the last run never reached the guest."""
        ...

    def forge_exit(self, kind: ExitKind, rip: int) -> VcpuExit:
        """Report an exit that happened without guest progress (replay of a lost entry).

        A pending access is finished, and ``interrupts_enabled`` afterwards says what the
        CPU says at this point (not a fixed answer): the recorded kick may have found an
        injected interrupt still queued, or a guest ready to take the next one.
        """
        ...

    def set_debug(self, breakpoints: list[int], single_step: bool = False) -> None:
        """Hardware execution breakpoints (at most 4) and/or single-stepping."""
        ...


class InstructionCounting(Protocol):
    """A CPU that counts the instructions the guest completed, exactly and repeatably.

    Guest time can then be the count (``InstructionClockSeam``), forced exits are landed
    by count, and the virtual TSC is ``instructions`` plus ``tsc_offset``.
    """

    instructions: int
    tsc_offset: int
    # what changed the guest's state without completing an instruction (an exception of an
    # instruction that did not complete, an interrupt delivered): instructions + deliveries
    # gives every point of the run its own position (the reverse debugger's clock)
    deliveries: int

    def set_instruction_limit(self, n: int | None) -> None:
        """Make ``run()`` return INTR when ``instructions`` reaches ``n`` (absolute; once)."""
        ...

    def hit_probes(self, on_hit: Callable[[Any], None]) -> Any:
        """Breakpoints and watchpoints that report each hit's exact position to ``on_hit``
        and let the guest run on (the reverse debugger's one-pass search)."""
        ...


@dataclass(frozen=True)
class PicRegisters:
    """One in-kernel 8259A's registers, as KVM reports them (``struct kvm_pic_state``)."""

    last_irr: int
    irr: int
    imr: int
    isr: int
    priority_add: int
    irq_base: int
    read_reg_select: int
    poll: int
    special_mask: int
    init_state: int
    auto_eoi: int
    rotate_on_auto_eoi: int
    special_fully_nested_mode: int
    init4: int
    elcr: int
    elcr_mask: int


@dataclass(frozen=True)
class QueuedInterrupt:
    """The vCPU's interrupt event state (``struct kvm_vcpu_events.interrupt``)."""

    injected: bool  # acknowledged from the PIC, delivered at the next entry
    vector: int
    shadow: bool  # an STI or MOV SS shadow holds interrupts back for one instruction


class KernelIrqchip(Protocol):
    """An interrupt controller inside the backend (KVM's, with ``--irqchip kernel``).

    Interrupt ports, EOIs and HLTs never leave the kernel: rrvmm drives the input lines
    (only while the vCPU is out of ``run()``) and reads the raw registers back to know what
    the controller will deliver (``rrvmm.machine.interrupts`` interprets them).
    """

    def set_irq_line(self, line: int, level: bool) -> None: ...

    def pic_registers(self) -> tuple[PicRegisters, PicRegisters]:
        """The master's and the slave's registers, as they stand."""
        ...

    def queued_interrupt(self) -> QueuedInterrupt | None:
        """The vCPU's interrupt events, or None while RFLAGS.IF is clear (nothing is taken)."""
        ...

    def halted(self) -> bool:
        """The vCPU sits in HLT inside the backend (HLT does not exit)."""
        ...

    def halt(self) -> None:
        """Execute the HLT at RIP without running (a single-stepped HLT would block)."""
        ...

    def at_hlt(self) -> bool:
        """The instruction at RIP is HLT."""
        ...

    def lapic_timer_armed(self) -> bool:
        """The guest enabled the local APIC and started its timer (not recordable)."""
        ...
