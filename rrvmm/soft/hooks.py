"""The callbacks unicorn calls while the guest runs, and what they leave for the run loop.

A callback that needs the machine (port I/O, MMIO, an exception, SYSCALL, a breakpoint)
records why in ``stop`` with unicorn's instruction counter at that moment and stops the
engine; the run loop does the rest outside ``emu_start``, where the CPU state is complete
and can be edited freely. CPUID and RDTSC are answered on the spot.

Re-executed instructions: an IN string instruction or an instruction reading MMIO (or a
read-protected page) is abandoned when it meets the read, its registers untouched, and
run again once the machine has the value; ``in_answer`` and ``mmio_answers`` then serve
the read. A store to MMIO abandons the instruction right after the store, a store to a
write-protected page right before it; either way it runs again with that store in
``swallow`` (passed through once, not reported again).
"""

from __future__ import annotations

import ctypes as C
from collections.abc import Callable

from rrvmm.cpu.cpuid import CPUID_FEATURES_HIDDEN, lookup
from rrvmm.soft import engine as E
from rrvmm.soft import layout as L

__all__ = ["Hooks"]

STOP_OUT, STOP_IN, STOP_SYSCALL, STOP_EXC, STOP_UD, STOP_BP = range(1, 7)
STOP_MMIO_READ, STOP_MMIO_WRITE, STOP_SYSENTER = 7, 8, 9
_REG = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}


class Hooks:
    def __init__(self, engine: E.Engine, cpuid_rows: list, tsc: Callable[[int], int]) -> None:
        self.e = engine
        self.tsc = tsc  # instructions started in this emu_start -> virtual TSC
        self.stop: tuple | None = None
        self.error: BaseException | None = None
        self.in_answer: tuple[int, int, int] | None = None  # port, size, value
        self.mmio_answers: list[tuple[int, int, int]] = []  # gpa, size, value, in order
        self.mmio_cursor = 0
        self.swallow: list[tuple[int, int, int]] = []  # MMIO stores already reported
        self.swallow_cursor = 0
        self.set_cpuid(cpuid_rows)
        uc, X = engine.unicorn, engine.X
        self._native_cpuid = engine.lib.cpu_x86_cpuid_x86_64
        self._native_cpuid.restype = None
        u32p = C.POINTER(C.c_uint32)
        self._native_cpuid.argtypes = [C.c_void_p, C.c_uint32, C.c_uint32, u32p, u32p, u32p, u32p]
        self._cpuid_out = [C.c_uint32() for _ in range(4)]
        add = engine.hook
        add(uc.UC_HOOK_INSN, E.IN_CB(self._on_in), 1, 0, X.UC_X86_INS_IN)
        add(uc.UC_HOOK_INSN, E.OUT_CB(self._on_out), 1, 0, X.UC_X86_INS_OUT)
        add(uc.UC_HOOK_INSN, E.VOID_CB(self._on_syscall), 1, 0, X.UC_X86_INS_SYSCALL)
        add(uc.UC_HOOK_INSN, E.VOID_CB(self._on_sysenter), 1, 0, X.UC_X86_INS_SYSENTER)
        add(uc.UC_HOOK_INSN, E.U32_CB(self._on_cpuid), 1, 0, X.UC_X86_INS_CPUID)
        add(uc.UC_HOOK_INSN, E.U32_CB(self._on_rdtsc), 1, 0, X.UC_X86_INS_RDTSC)
        add(uc.UC_HOOK_INSN, E.U32_CB(self._on_rdtscp), 1, 0, X.UC_X86_INS_RDTSCP)
        add(uc.UC_HOOK_INTR, E.INTR_CB(self._on_intr))
        add(uc.UC_HOOK_INSN_INVALID, E.INVALID_CB(self._on_invalid))
        self._read_prot_cb = E.MEM_EVENT_CB(self._on_read_prot)
        self._write_prot_cb = E.MEM_EVENT_CB(self._on_write_prot)
        self._page_hooks: list[int] = []  # the protection hooks over protected RAM pages
        self.is_ram: Callable[[int], bool] = lambda gpa: False
        self._code_cb = E.CODE_CB(self._on_breakpoint)
        self._bp_hooks: dict[int, int] = {}  # address -> hook handle
        self.armed: frozenset[int] = frozenset()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.e.stop()

    def _record(self, stop: tuple) -> None:
        if self.stop is None:
            self.stop = stop
        self.e.stop()

    # --- port I/O, SYSCALL, exceptions ---
    def _on_in(self, _uc: int, port: int, size: int, _ud: int) -> int:
        try:
            ans = self.in_answer
            if ans is not None and ans[0] == port and ans[1] == size:
                self.in_answer = None
                return ans[2]
            e = self.e
            self._record((STOP_IN, e.counter.value, port, size, e.rip.value, e.regs[L.R_EAX]))
        except BaseException as exc:  # noqa: BLE001 - must not unwind into C
            self._fail(exc)
        return 0

    def _on_out(self, _uc: int, port: int, size: int, value: int, _ud: int) -> None:
        try:
            self._record((STOP_OUT, self.e.counter.value, port, size, value))
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _on_syscall(self, _uc: int, _ud: int) -> None:
        try:
            self._record((STOP_SYSCALL, self.e.counter.value, self.e.rip.value))
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _on_sysenter(self, _uc: int, _ud: int) -> None:
        try:
            self._record((STOP_SYSENTER, self.e.counter.value, self.e.rip.value))
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _on_intr(self, _uc: int, intno: int, _ud: int) -> None:
        try:
            e = self.e
            self._record((
                STOP_EXC, e.counter.value, intno, e.error_code.value,
                e.exception_is_int.value, e.retaddr.value,
            ))  # fmt: skip
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _on_invalid(self, _uc: int, _ud: int) -> bool:
        try:
            self._record((STOP_UD, self.e.counter.value))
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        return True

    # --- breakpoints ---
    # Translated code calls the instruction counter directly while it is the only code
    # hook (fast), and only looks at the hook list when there are more: code translated
    # before a breakpoint hook exists never sees it. So the first breakpoint hook flushes
    # the translations; hooks then stay (disarmed ones ignore their address) until a run
    # with nothing armed drops them all and flushes again to get the fast path back. The
    # replayer's disarm / step / re-arm cycle costs no retranslation.
    def _on_breakpoint(self, _uc: int, address: int, _size: int, _ud: int) -> None:
        try:
            if address in self.armed:
                self._record((STOP_BP, self.e.counter.value, address))
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        self.armed = addresses
        new = [a for a in sorted(addresses) if a not in self._bp_hooks]
        if not new:
            return
        first = not self._bp_hooks
        uc = self.e.unicorn
        for a in new:
            self._bp_hooks[a] = self.e.hook(uc.UC_HOOK_CODE, self._code_cb, a, a)
        if first:
            self.e.flush_tb()

    def drop_breakpoints(self) -> None:
        """Remove the (disarmed) breakpoint hooks: back to the fast counter path."""
        if self._bp_hooks and not self.armed:
            for h in self._bp_hooks.values():
                self.e.unhook(h)
            self._bp_hooks.clear()
            self.e.flush_tb()

    # --- MMIO and protected pages ---
    # The protection-event hooks are bounded to the physical ranges that can raise them
    # (MMIO windows; protected RAM pages while a watchpoint needs them). Unicorn 2.1.4 keeps
    # a page's stores on the slow path (``notdirty_write`` on every store) as long as any
    # memory hook covers the page, so an unbounded hook would slow every guest store.
    def cover_mmio(self, gpa: int, size: int) -> None:
        """Refused reads in the MMIO window ``gpa``..``gpa+size`` reach ``_on_read_prot``."""
        self.e.hook(self.e.unicorn.UC_HOOK_MEM_READ_PROT, self._read_prot_cb, gpa, gpa + size - 1)

    def cover_pages(self, spans: list[tuple[int, int]]) -> None:
        """Protection events from RAM in ``spans`` ((start, end) each) reach the hooks."""
        for h in self._page_hooks:
            self.e.unhook(h)
        self._page_hooks.clear()
        uc = self.e.unicorn
        for lo, hi in spans:
            for kind, cb in (
                (uc.UC_HOOK_MEM_READ_PROT, self._read_prot_cb),
                (uc.UC_HOOK_MEM_WRITE_PROT, self._write_prot_cb),
            ):
                self._page_hooks.append(self.e.hook(kind, cb, lo, hi - 1))

    def _on_read_prot(self, _uc: int, _access: int, gpa: int, size: int, _v: int, _ud: int) -> bool:
        try:
            i = self.mmio_cursor
            answers = self.mmio_answers
            if i < len(answers) and answers[i][0] == gpa and answers[i][1] == size:
                if self.is_ram(gpa):  # a protected RAM page: the load reads RAM itself
                    self.mmio_cursor = i + 1
                return True  # let the load through (an MMIO window's read serves the answer)
            if self.stop is None:
                self.stop = (STOP_MMIO_READ, self.e.counter.value, gpa, size)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        return False  # abandon the instruction before it changes anything

    def _on_write_prot(self, _uc: int, _a: int, gpa: int, size: int, value: int, _ud: int) -> bool:
        """A store to a write-protected RAM page (a watchpoint): report it, then let it
        through when the instruction runs again."""
        try:
            item = (gpa, size, value & ((1 << (8 * size)) - 1))
            j = self.swallow_cursor
            if j < len(self.swallow) and self.swallow[j] == item:
                self.swallow_cursor = j + 1
                return True
            if self.stop is None:
                self.stop = (STOP_MMIO_WRITE, self.e.counter.value, *item)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        return False

    def mmio_read(self, base: int) -> Callable[[int, int, int, int], int]:
        def read(_uc: int, offset: int, size: int, _ud: int) -> int:
            i = self.mmio_cursor
            if i < len(self.mmio_answers):
                self.mmio_cursor = i + 1
                return self.mmio_answers[i][2]
            return (1 << (8 * size)) - 1

        return read

    def mmio_write(self, base: int) -> Callable[[int, int, int, int, int], None]:
        def write(_uc: int, offset: int, size: int, value: int, _ud: int) -> None:
            try:
                item = (base + offset, size, value)
                j = self.swallow_cursor
                if j < len(self.swallow) and self.swallow[j] == item:
                    self.swallow_cursor = j + 1
                    return
                self._record((STOP_MMIO_WRITE, self.e.counter.value, *item))
            except BaseException as exc:  # noqa: BLE001
                self._fail(exc)

        return write

    @staticmethod
    def open_bus(_uc: int, _offset: int, size: int, _ud: int) -> int:
        return (1 << (8 * size)) - 1

    @staticmethod
    def ignore(_uc: int, _offset: int, _size: int, _value: int, _ud: int) -> None:
        return None

    # --- CPUID, RDTSC ---
    def set_cpuid(self, rows: list) -> None:
        self.rows = [tuple(r) for r in rows]
        self._cpuid_cache: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def _native(self, leaf: int, sub: int) -> tuple[int, int, int, int]:
        out = self._cpuid_out
        self._native_cpuid(self.e.env, leaf, sub, *(C.byref(o) for o in out))
        return out[0].value, out[1].value, out[2].value, out[3].value

    def native_rows(self) -> list[tuple[int, ...]]:
        """unicorn's CPU model as KVM-style rows (function, index, flags, eax..edx)."""
        rows: list[tuple[int, ...]] = []
        for base in (0, 0x8000_0000):
            top = self._native(base, 0)[0]
            for leaf in range(base, min(top, base + 0x40) + 1):
                if leaf in (4, 7, 0xB, 0xD):
                    for sub in range(64):
                        regs = self._native(leaf, sub)
                        if leaf == 4 and not regs[0] & 0x1F or leaf == 0xB and not regs[2] & 0xFF00:
                            break
                        if leaf == 7 and sub > self._native(7, 0)[0]:
                            break
                        if leaf == 0xD and sub > 1 and not any(regs):
                            continue
                        rows.append((leaf, sub, 1, *regs))
                else:
                    rows.append((leaf, 0, 0, *self._native(leaf, 0)))
        return rows

    def cpuid(self, leaf: int, sub: int) -> tuple[int, int, int, int]:
        key = (leaf, sub)
        hit = self._cpuid_cache.get(key)
        if hit is None:
            if self.rows:
                hit = lookup(self.rows, leaf, sub)
            else:  # no table: unicorn's own model, minus what would break determinism
                regs = list(self._native(leaf, sub))
                for f, s, reg, bit, _ in CPUID_FEATURES_HIDDEN:
                    if f == leaf and s == sub:
                        regs[_REG[reg]] &= ~(1 << bit)
                hit = (regs[0], regs[1], regs[2], regs[3])
            self._cpuid_cache[key] = hit
        return hit

    def _on_cpuid(self, _uc: int, _ud: int) -> int:
        try:
            regs = self.e.regs
            a, b, c, d = self.cpuid(regs[L.R_EAX] & 0xFFFF_FFFF, regs[L.R_ECX] & 0xFFFF_FFFF)
            regs[L.R_EAX], regs[L.R_EBX], regs[L.R_ECX], regs[L.R_EDX] = a, b, c, d
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        return 1

    def _on_rdtsc(self, _uc: int, _ud: int) -> int:
        try:
            t = self.tsc(self.e.counter.value - 1)
            regs = self.e.regs
            regs[L.R_EAX], regs[L.R_EDX] = t & 0xFFFF_FFFF, (t >> 32) & 0xFFFF_FFFF
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        return 1

    def _on_rdtscp(self, _uc: int, _ud: int) -> int:
        self._on_rdtsc(_uc, _ud)
        self.e.regs[L.R_ECX] = self.e.u64(L.TSC_AUX) & 0xFFFF_FFFF
        return 1
