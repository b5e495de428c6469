"""The interface every CPU backend (KVM, software) implements, and the exits it reports.

The run loop sees only this module: one reused ``VcpuExit`` per backend (allocation-free on
the hot path), register files as plain dicts with the names gdb and kvm_regs use, and a
handful of calls for interrupt delivery. A backend owns guest RAM as one host buffer.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CpuBackend",
    "ExitKind",
    "GPR_NAMES",
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
