"""The unicorn engine under the soft backend: version check, raw state access, hooks.

Everything here talks to one unicorn build (see ``layout``). ``Engine`` creates a 64-bit
x86 engine, finds QEMU's ``CPUX86State`` and the ``emu_start`` instruction counter inside
it, checks each offset against unicorn's own accessors, and exposes them as ctypes views:
a register read is a memory load, not a library call.

Unicorn is created in ``UC_MODE_64`` (only that mode gives the CPU the long-mode CPUID bit,
so the guest's own ``wrmsr EFER.LME`` works); the backend then writes the state of whatever
mode the guest is in (32-bit protected mode at a multiboot entry) straight into the CPU and
lets QEMU recompute its mode flags (``x86_update_hflags``).
"""

from __future__ import annotations

import ctypes as C
import os
import struct
from collections.abc import Callable

from rrvmm.cpu.backend import BackendError, BackendUnavailable
from rrvmm.soft import layout as L

__all__ = ["Engine", "load_unicorn"]

c_uc = C.c_void_p
IN_CB = C.CFUNCTYPE(C.c_uint32, c_uc, C.c_uint32, C.c_int, C.c_void_p)
OUT_CB = C.CFUNCTYPE(None, c_uc, C.c_uint32, C.c_int, C.c_uint32, C.c_void_p)
VOID_CB = C.CFUNCTYPE(None, c_uc, C.c_void_p)  # syscall
U32_CB = C.CFUNCTYPE(C.c_uint32, c_uc, C.c_void_p)  # cpuid, rdtsc, rdtscp
INTR_CB = C.CFUNCTYPE(None, c_uc, C.c_uint32, C.c_void_p)
INVALID_CB = C.CFUNCTYPE(C.c_bool, c_uc, C.c_void_p)
CODE_CB = C.CFUNCTYPE(None, c_uc, C.c_uint64, C.c_uint32, C.c_void_p)
MEM_EVENT_CB = C.CFUNCTYPE(C.c_bool, c_uc, C.c_int, C.c_uint64, C.c_int, C.c_int64, C.c_void_p)
MMIO_READ_CB = C.CFUNCTYPE(C.c_uint64, c_uc, C.c_uint64, C.c_uint, C.c_void_p)
MMIO_WRITE_CB = C.CFUNCTYPE(None, c_uc, C.c_uint64, C.c_uint, C.c_uint64, C.c_void_p)

_INTERNALS = (
    "x86_update_hflags_x86_64",
    "tlb_flush_x86_64",
    "tb_flush_x86_64",
    "tb_invalidate_phys_range_x86_64",
)


def load_unicorn():  # noqa: ANN201 - the unicorn module
    """The unicorn module, if it is the one version whose internals we know."""
    try:
        import unicorn
    except ImportError as e:
        raise BackendUnavailable(f"the soft backend needs unicorn {L.UNICORN_VERSION}: {e}") from e
    have = getattr(unicorn, "__version__", "?")
    word = unicorn.uc_version()[2]
    if have != L.UNICORN_VERSION or word != L.UNICORN_VERSION_WORD:
        raise BackendUnavailable(
            f"the soft backend needs unicorn {L.UNICORN_VERSION} exactly (it reads the CPU"
            f" state at fixed offsets); found {have} (library {word:#x})"
        )
    return unicorn


def _read_process_memory(addr: int, size: int) -> bytes:
    """Read our own memory without risking a crash on a wrong pointer."""
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        return os.pread(fd, size, addr)
    except OSError:
        return b""
    finally:
        os.close(fd)


class Engine:
    """One unicorn x86-64 engine and ctypes views of its CPU state."""

    def __init__(self) -> None:
        uc_mod = load_unicorn()
        from unicorn import x86_const as X
        from unicorn.unicorn_py3.unicorn import uclib

        self.unicorn = uc_mod
        self.X = X
        self.lib = uclib
        self.uc = uc_mod.Uc(uc_mod.UC_ARCH_X86, uc_mod.UC_MODE_64)
        self.handle = self.uc._uch  # c_void_p
        h = self.handle.value
        self._callbacks: list[object] = []  # keep ctypes thunks alive
        for name in _INTERNALS:
            if not hasattr(uclib, name):
                raise BackendUnavailable(f"unicorn library lacks the internal symbol {name}")
        self._update_hflags = uclib.x86_update_hflags_x86_64
        self._update_hflags.argtypes, self._update_hflags.restype = [C.c_void_p], None
        self._tlb_flush = uclib.tlb_flush_x86_64
        self._tlb_flush.argtypes, self._tlb_flush.restype = [C.c_void_p], None
        self._tb_flush = uclib.tb_flush_x86_64
        self._tb_flush.argtypes, self._tb_flush.restype = [C.c_void_p], None
        self._tb_inval = uclib.tb_invalidate_phys_range_x86_64
        self._tb_inval.argtypes = [C.c_void_p, C.c_uint64, C.c_uint64]
        self._tb_inval.restype = None
        self._emu_start = uclib.uc_emu_start
        self._emu_stop = uclib.uc_emu_stop

        self.uc.reg_read(X.UC_X86_REG_RIP)  # unicorn creates the CPU on first use
        raw = _read_process_memory(h + L.UC_CPU, 8)
        if len(raw) != 8:
            raise BackendError("cannot read unicorn's engine structure")
        self.cpu = struct.unpack("<Q", raw)[0]
        self.env = self.cpu + L.CPU_ENV
        self._verify_env()
        env = self.env
        self.regs = (C.c_uint64 * 16).from_address(env + L.REGS)
        self.rip = C.c_uint64.from_address(env + L.EIP)
        self.eflags = C.c_uint64.from_address(env + L.EFLAGS)
        self.hflags = C.c_uint32.from_address(env + L.HFLAGS)
        self.hflags2 = C.c_uint32.from_address(env + L.HFLAGS2)
        self.cr = (C.c_uint64 * 9).from_address(env + L.CR)
        self.efer = C.c_uint64.from_address(env + L.EFER)
        self.error_code = C.c_int32.from_address(env + L.ERROR_CODE)
        self.exception_is_int = C.c_int32.from_address(env + L.EXCEPTION_IS_INT)
        self.old_exception = C.c_int32.from_address(env + L.OLD_EXCEPTION)
        self.retaddr = C.c_uint64.from_address(env + L.RETADDR)
        self.counter = C.c_size_t.from_address(h + L.UC_EMU_COUNTER)
        self._verify_counter(uc_mod)
        # no exit addresses: uc_emu_start's "until" must never stop the guest
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])

    # --- start-up checks ---
    def _verify_env(self) -> None:
        """The env pointer and field offsets match what unicorn's accessors see."""
        uc, X = self.uc, self.X
        if self.lib.uc_context_size(self.handle) != L.CONTEXT_SIZE:
            raise BackendUnavailable("unicorn's CPU context has an unexpected size")
        names = [f"R{n}" for n in ("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")]
        names += [f"R{i}" for i in range(8, 16)]
        for i, n in enumerate(names):
            uc.reg_write(getattr(X, f"UC_X86_REG_{n}"), 0x5EED_0000_0000_0000 + i)
        uc.reg_write(X.UC_X86_REG_RIP, 0x5EED_1234)
        msrs = {
            L.MSR_STAR: L.STAR, L.MSR_LSTAR: L.LSTAR, L.MSR_CSTAR: L.CSTAR,
            L.MSR_FMASK: L.FMASK, L.MSR_KERNEL_GS_BASE: L.KERNEL_GS_BASE,
            L.MSR_SYSENTER_ESP: L.SYSENTER_ESP, L.MSR_SYSENTER_EIP: L.SYSENTER_EIP,
            L.MSR_TSC_AUX: L.TSC_AUX, L.MSR_PAT: L.PAT,
        }  # fmt: skip
        for i, msr in enumerate(msrs):
            uc.msr_write(msr, 0x1000 * (i + 1))
        uc.reg_write(X.UC_X86_REG_CR2, 0xC2C2_0000)
        uc.reg_write(X.UC_X86_REG_DR1, 0xD1D1)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x6D70_0000, 0x27, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0x1D70_0000, 0xFFF, 0))
        ctx = bytes(uc.context_save())[L.CONTEXT_HEADER :]
        env = _read_process_memory(self.env, L.ENV_SIZE)
        if env != ctx:
            raise BackendUnavailable("unicorn's CPU state is not where this build keeps it")

        def q(off: int) -> int:
            return struct.unpack_from("<Q", env, off)[0]

        ok = all(q(L.REGS + 8 * i) == 0x5EED_0000_0000_0000 + i for i in range(16))
        ok = ok and q(L.EIP) == 0x5EED_1234 and q(L.CR + 16) == 0xC2C2_0000
        ok = ok and q(L.DR + 8) == 0xD1D1 and q(L.GDT + 8) == 0x6D70_0000
        ok = ok and q(L.IDT + 8) == 0x1D70_0000 and q(L.EFER) == L.EFER_LMA | L.EFER_LME
        ok = ok and all(q(off) == 0x1000 * (i + 1) for i, off in enumerate(msrs.values()))
        ok = ok and struct.unpack_from("<i", env, L.OLD_EXCEPTION)[0] == -1
        if not ok:
            raise BackendUnavailable("unicorn's CPU state layout differs from this build's")
        for msr in msrs:
            uc.msr_write(msr, 0)
        C.memset(self.env + L.REGS, 0, 17 * 8)
        for off in (L.CR + 16, L.DR + 8, L.GDT + 8, L.IDT + 8):
            C.c_uint64.from_address(self.env + off).value = 0

    def _verify_counter(self, uc_mod) -> None:  # noqa: ANN001
        """emu_start's instruction counter is where we read it (checked on a scratch engine)."""
        import mmap

        scratch = uc_mod.Uc(uc_mod.UC_ARCH_X86, uc_mod.UC_MODE_64)
        page = mmap.mmap(-1, 4096)
        try:
            page[0:10] = b"\x48\xff\xc0" * 3 + b"\xf4"  # inc rax x3; hlt
            addr = C.addressof(C.c_char.from_buffer(page))
            scratch.mem_map_ptr(0x1000, 4096, uc_mod.UC_PROT_ALL, addr)
            h = scratch._uch.value
            counter = C.c_size_t.from_address(h + L.UC_EMU_COUNTER)
            count = C.c_size_t.from_address(h + L.UC_EMU_COUNT)
            scratch.emu_start(0x1000, 0, count=100)
            full = (counter.value, count.value)
            scratch.emu_start(0x1000, 0, count=2)
            part = (counter.value, count.value)
            scratch.mem_unmap(0x1000, 4096)
        finally:
            del scratch
        if full != (4, 100) or part != (3, 2):
            raise BackendUnavailable("unicorn's instruction counter is not where expected")

    # --- running ---
    def start(self, count: int) -> int:
        """Run up to ``count`` instructions from the current RIP; unicorn's error code."""
        return self._emu_start(self.handle, self.rip.value, 0, 0, count)

    def stop(self) -> None:
        self._emu_stop(self.handle)

    def strerror(self, err: int) -> str:
        return self.lib.uc_strerror(err).decode()

    # --- CPU state helpers ---
    def update_hflags(self) -> None:
        """Recompute QEMU's mode flags (CPL, CS32/64, LMA, PE...) from the state."""
        self._update_hflags(self.env)

    def flush_tlb(self) -> None:
        self._tlb_flush(self.cpu)

    def flush_tb(self) -> None:
        self._tb_flush(self.cpu)

    def invalidate_code(self, ram_offset: int, size: int) -> None:
        """Drop translated code for a RAM range the host wrote (guest writes are tracked)."""
        self._tb_inval(self.handle, ram_offset, ram_offset + size)

    def u64(self, off: int) -> int:
        return C.c_uint64.from_address(self.env + off).value

    def set_u64(self, off: int, value: int) -> None:
        C.c_uint64.from_address(self.env + off).value = value & 0xFFFF_FFFF_FFFF_FFFF

    def u32(self, off: int) -> int:
        return C.c_uint32.from_address(self.env + off).value

    def set_u32(self, off: int, value: int) -> None:
        C.c_uint32.from_address(self.env + off).value = value & 0xFFFF_FFFF

    def segment(self, off: int) -> tuple[int, int, int, int]:
        """(selector, base, limit, flags) of the SegmentCache at ``off``."""
        sel, base, limit, flags = struct.unpack("<I4xQII", C.string_at(self.env + off, 24))
        return sel & 0xFFFF, base, limit, flags

    def set_segment(self, off: int, selector: int, base: int, limit: int, flags: int) -> None:
        data = struct.pack(
            "<I4xQII", selector & 0xFFFF, base & (2**64 - 1), limit & 0xFFFF_FFFF, flags
        )
        C.memmove(self.env + off, data, 24)

    # --- memory and hooks ---
    def map_ram(self, gpa: int, size: int, host_addr: int) -> None:
        self.uc.mem_map_ptr(gpa, size, self.unicorn.UC_PROT_ALL, host_addr)

    def map_mmio(self, gpa: int, size: int, read: Callable, write: Callable) -> None:
        """An MMIO window: writes call ``write``; reads are refused (a READ_PROT event)
        unless the event hook handles them, and then call ``read``."""
        rcb, wcb = MMIO_READ_CB(read), MMIO_WRITE_CB(write)
        self._callbacks += [rcb, wcb]
        err = self.lib.uc_mmio_map(
            self.handle, gpa, size, C.cast(rcb, C.c_void_p), None, C.cast(wcb, C.c_void_p), None
        )
        if err:
            raise BackendError(f"cannot map MMIO window {gpa:#x}+{size:#x}: {self.strerror(err)}")
        self.uc.mem_protect(gpa, size, self.unicorn.UC_PROT_WRITE)

    def hook(self, kind: int, cfunc: object, begin: int = 1, end: int = 0, *extra: int) -> int:
        """Register a raw ctypes callback; returns the hook handle."""
        handle = C.c_size_t()
        args = [C.c_int(x) for x in extra]
        err = self.lib.uc_hook_add(
            self.handle, C.byref(handle), kind, C.cast(cfunc, C.c_void_p), None,
            C.c_uint64(begin), C.c_uint64(end), *args,
        )  # fmt: skip
        if err:
            raise BackendError(f"unicorn refused a hook: {self.strerror(err)}")
        self._callbacks.append(cfunc)
        return handle.value

    def unhook(self, handle: int) -> None:
        self.lib.uc_hook_del(self.handle, C.c_size_t(handle))

    def close(self) -> None:
        self.uc = None  # type: ignore[assignment]
        self._callbacks.clear()
