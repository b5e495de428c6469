"""The soft backend's answer to ``kvm.memslots.MemorySlots``: dirty pages and protection.

Same interface, so the replay engine treats both backends alike: per-consumer dirty-page
accumulators over one log (``dirty.DirtyLog``), and protected low-memory pages for exact
watchpoints. A protected page is a RAM page without write (``"ro"``) or read and write
(``"none"``) permission in unicorn: the guest's access is abandoned before it happens and
reported as an MMIO exit; once the machine has handled the exit, the instruction runs again
and the access goes through to RAM.
"""

from __future__ import annotations

import ctypes as C
from collections.abc import Callable

from rrvmm.cpu.dirty import PAGE, DirtyAccumulators
from rrvmm.soft.dirty import DirtyLog
from rrvmm.soft.mmu import PhysMemory

__all__ = ["SoftSlots", "PAGE"]

_READ_CB = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_uint64, C.c_int, C.c_int64, C.c_void_p)


class SoftSlots(DirtyAccumulators):
    def __init__(
        self,
        engine,  # noqa: ANN001 - soft.engine.Engine
        phys: PhysMemory,
        log: DirtyLog,
        cover: Callable[[list[tuple[int, int]]], None],
    ) -> None:
        super().__init__()
        self.e = engine
        self.cover = cover  # bounds the protection-event hooks to the protected pages
        self.phys = phys
        self.log = log
        self.memory_size = phys.size
        self.low = phys.low
        self.dirty_logging = False
        self._protected: dict[int, str] = {}
        self._slow_loads: int | None = None  # hook handle forcing loads off the fast path

    # --- layout ---
    def host_offset(self, gpa: int, size: int) -> int | None:
        return self.phys.offset(gpa, size)

    def mode_of(self, gpa: int) -> str | None:
        return self._protected.get(gpa // PAGE) if gpa < self.low else None

    def protect(self, pages: dict[int, str]) -> None:
        """Set the protected low-memory pages: page number -> 'ro' or 'none'."""
        uc = self.e.unicorn
        perms = {
            "ro": uc.UC_PROT_READ | uc.UC_PROT_EXEC,
            "none": uc.UC_PROT_EXEC,
            None: uc.UC_PROT_ALL,
        }
        wanted = {p: m for p, m in pages.items() if p * PAGE < self.low}
        changed = set(wanted) | set(self._protected)
        if wanted != self._protected:
            self.cover(_runs(sorted(wanted)))
        for page in sorted(changed):
            if wanted.get(page) != self._protected.get(page):
                self.e.uc.mem_protect(page * PAGE, PAGE, perms[wanted.get(page)])
        self._protected = dict(wanted)
        self._force_slow_loads("none" in wanted.values())
        self.e.flush_tlb()

    def _force_slow_loads(self, on: bool) -> None:
        """Unicorn checks read permission only for loads that leave the TLB fast path, and
        translated code skips the fast path only while a memory-read hook exists. So a
        read-protected page costs a do-nothing read hook (bounded to an address never
        used) and a retranslation; every load is slower until the protection goes."""
        if on == (self._slow_loads is not None):
            return
        if on:
            never = 2**63
            cb = _READ_CB(lambda *_: None)
            self._slow_loads = self.e.hook(self.e.unicorn.UC_HOOK_MEM_READ, cb, never, never)
        else:
            assert self._slow_loads is not None
            self.e.unhook(self._slow_loads)
            self._slow_loads = None
        self.e.flush_tb()

    # --- dirty pages ---
    def enable_dirty_log(self) -> None:
        if not self.dirty_logging:
            self.log.enable()
            self.dirty_logging = True

    def _read_log(self) -> int:
        return self.log.fetch()


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as (start, end) address ranges of consecutive pages."""
    runs: list[tuple[int, int]] = []
    for page in pages:
        if runs and runs[-1][1] == page * PAGE:
            runs[-1] = (runs[-1][0], (page + 1) * PAGE)
        else:
            runs.append((page * PAGE, (page + 1) * PAGE))
    return runs
