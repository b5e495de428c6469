"""Guest RAM as KVM memory slots: dirty logging for several readers, and page protection.

Two features need to change the slot layout at run time. Exact watchpoints make watched
pages read-only (a guest write exits as MMIO with address and data) or absent (reads exit
too). Landings and incremental checkpoints both need "which pages did the guest write
since I last asked", but KVM's dirty log is cleared by each read: so every read is folded
into one accumulator per consumer. Writes rrvmm performs for the guest (emulating a write
to a protected page) are added by hand, because KVM does not log host writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrvmm.cpu.dirty import PAGE, DirtyAccumulators
from rrvmm.kvm import linux_kvm as K
from rrvmm.kvm.kvm import KvmVm

__all__ = ["MemorySlots", "LOW_MEMORY_LIMIT", "HIGH_BASE", "PAGE"]

LOW_MEMORY_LIMIT = 0xC000_0000  # RAM above this goes above 4 GiB (PCI/MMIO hole)
HIGH_BASE = 0x1_0000_0000


@dataclass
class _Slot:
    slot: int
    gpa: int
    size: int
    host_offset: int
    readonly: bool
    logged: bool


class MemorySlots(DirtyAccumulators):
    def __init__(self, vm: KvmVm, host_addr: int, memory_size: int) -> None:
        super().__init__()
        self.vm = vm
        self.host_addr = host_addr
        self.memory_size = memory_size
        self.low = min(memory_size, LOW_MEMORY_LIMIT)
        self._slots: list[_Slot] = []
        self._next_id = 0
        self.dirty_logging = False
        self._protected: dict[int, str] = {}  # low-memory page number -> "ro" | "none"
        self._layout()

    # --- layout ---
    def _regions(self) -> list[tuple[int, int, int, bool]]:
        """(gpa, size, host_offset, readonly) covering RAM minus absent pages."""
        out: list[tuple[int, int, int, bool]] = []
        start = 0
        for page in sorted(self._protected):
            addr = page * PAGE
            if addr >= self.low:
                continue
            if addr > start:
                out.append((start, addr - start, start, False))
            if self._protected[page] == "ro":
                out.append((addr, PAGE, addr, True))
            start = addr + PAGE
        if start < self.low:
            out.append((start, self.low - start, start, False))
        if self.memory_size > self.low:
            out.append((HIGH_BASE, self.memory_size - self.low, self.low, False))
        return out

    def _layout(self) -> None:
        self.fetch_dirty()  # a deleted slot takes its dirty log with it
        for s in self._slots:
            self.vm.set_user_memory_region(s.slot, s.gpa, 0, self.host_addr + s.host_offset)
        self._slots = []
        flags_base = K.KVM_MEM_LOG_DIRTY_PAGES if self.dirty_logging else 0
        for gpa, size, off, ro in self._regions():
            slot = _Slot(self._next_id, gpa, size, off, ro, self.dirty_logging)
            self._next_id += 1
            flags = flags_base | (K.KVM_MEM_READONLY if ro else 0)
            self.vm.set_user_memory_region(slot.slot, gpa, size, self.host_addr + off, flags)
            self._slots.append(slot)

    def protect(self, pages: dict[int, str]) -> None:
        """Set the protected low-memory pages: page number -> 'ro' or 'none'."""
        if pages != self._protected:
            self._protected = dict(pages)
            self._layout()

    def mode_of(self, gpa: int) -> str | None:
        return self._protected.get(gpa // PAGE) if gpa < self.low else None

    def host_offset(self, gpa: int, size: int) -> int | None:
        if 0 <= gpa and gpa + size <= self.low:
            return gpa
        if gpa >= HIGH_BASE and gpa + size - HIGH_BASE <= self.memory_size - self.low:
            return gpa - HIGH_BASE + self.low
        return None

    # --- dirty pages ---
    def enable_dirty_log(self) -> None:
        if not self.dirty_logging:
            self.dirty_logging = True
            self._layout()

    def _read_log(self) -> int:
        bits = 0
        for s in self._slots:
            if s.readonly or not s.logged:
                continue  # read-only: its writes are emulated by rrvmm and marked by hand
            word = int.from_bytes(self.vm.get_dirty_log(s.slot), "little")
            if word:
                bits |= word << (s.host_offset // PAGE)
        return bits
