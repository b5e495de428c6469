"""Guest physical memory and the page walk, for what the backend does on the CPU's behalf.

Unicorn translates guest addresses itself while it runs; the backend needs its own walk for
the accesses a real CPU makes during event delivery (IDT, GDT, TSS, the new stack frame).
The walk itself is ``rrvmm.cpu.mmu.walk`` (the debugger's too); here it checks write and user
permissions the way the CPU does for implicit supervisor accesses, sets accessed and dirty
bits, and raises ``GuestFault`` with the #PF error code (and CR2) a real walk would produce.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from rrvmm.cpu.mmu import Entry, PageFault, walk
from rrvmm.soft import layout as L

__all__ = ["GuestFault", "PhysMemory", "Walker", "LOW_MEMORY_LIMIT", "HIGH_BASE"]

LOW_MEMORY_LIMIT = 0xC000_0000  # RAM above this goes above 4 GiB (PCI/MMIO hole), as on KVM
HIGH_BASE = 0x1_0000_0000
_RW, _US, _A, _D = 2, 4, 0x20, 0x40
PF_PRESENT, PF_WRITE, PF_USER = 1, 2, 4


class GuestFault(Exception):
    """An exception the CPU would raise while the backend acts for it."""

    def __init__(self, vector: int, error_code: int | None = 0, cr2: int | None = None) -> None:
        super().__init__(f"guest fault vector {vector} error {error_code}")
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2


class PhysMemory:
    """Guest RAM in one host buffer: low RAM at 0, the rest at 4 GiB (KVM's layout)."""

    def __init__(self, buf, memory_size: int) -> None:  # noqa: ANN001 - mmap
        self.buf = buf
        self.size = memory_size
        self.low = min(memory_size, LOW_MEMORY_LIMIT)

    def offset(self, gpa: int, size: int = 1) -> int | None:
        """Host buffer offset of guest physical ``gpa``..``gpa+size``, None if not RAM."""
        if 0 <= gpa and gpa + size <= self.low:
            return gpa
        if gpa >= HIGH_BASE and gpa + size - HIGH_BASE <= self.size - self.low:
            return gpa - HIGH_BASE + self.low
        return None

    def read(self, gpa: int, size: int) -> bytes:
        off = self.offset(gpa, size)
        if off is None:
            return b"\xff" * size  # not RAM: reads as all ones, like an empty bus
        return self.buf[off : off + size]

    def write(self, gpa: int, data: bytes) -> None:
        off = self.offset(gpa, len(data))
        if off is not None:
            self.buf[off : off + len(data)] = data

    def read_u64(self, gpa: int) -> int:
        off = self.offset(gpa, 8)
        return struct.unpack_from("<Q", self.buf, off)[0] if off is not None else 2**64 - 1

    def read_u32(self, gpa: int) -> int:
        off = self.offset(gpa, 4)
        return struct.unpack_from("<I", self.buf, off)[0] if off is not None else 2**32 - 1


class Walker:
    """Linear-address accesses under the guest's current paging mode."""

    def __init__(self, mem: PhysMemory, engine) -> None:  # noqa: ANN001 - Engine
        self.mem = mem
        self.e = engine

    def translate(self, la: int, write: bool = False, user: bool = False) -> int:
        cr = self.e.cr
        efer = self.e.efer.value
        if efer & L.EFER_LMA and cr[0] & L.CR0_PG:
            levels = 5 if cr[4] & L.CR4_LA57 else 4
            top = la >> (9 * levels + 11)  # the bits above the top of the address space
            if top not in (0, (1 << (64 - 9 * levels - 11)) - 1):
                raise GuestFault(L.EXC_GP, 0)
        try:
            pa, entries = walk(la, cr[0], cr[3], cr[4], efer, self.mem.read)
        except PageFault as f:
            self._fault(f.address, 0, write, user)
        self._check_and_mark(entries, la, write, user, bool(cr[0] & L.CR0_WP))
        return pa

    def _fault(self, la: int, present: int, write: bool, user: bool) -> NoReturn:
        code = present | (PF_WRITE if write else 0) | (PF_USER if user else 0)
        raise GuestFault(L.EXC_PF, code, la)

    def _check_and_mark(
        self, entries: list[Entry], la: int, write: bool, user: bool, wp: bool
    ) -> None:
        if user and not all(e & _US for _, e, _ in entries):
            self._fault(la, PF_PRESENT, write, user)
        if write and (user or wp) and not all(e & _RW for _, e, _ in entries):
            self._fault(la, PF_PRESENT, write, user)
        last = len(entries) - 1
        for i, (addr, entry, size) in enumerate(entries):
            new = entry | _A | (_D if write and i == last else 0)
            if new != entry:
                self.mem.write(addr, new.to_bytes(size, "little"))

    def read(self, la: int, size: int, user: bool = False) -> bytes:
        out = b""
        while size:
            n = min(size, 0x1000 - (la & 0xFFF))
            out += self.mem.read(self.translate(la, False, user), n)
            la, size = la + n, size - n
        return out

    def write(self, la: int, data: bytes, user: bool = False) -> None:
        # translate every page first: a fault must leave memory untouched
        pieces = []
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, 0x1000 - (la & 0xFFF))
            pieces.append((self.translate(la, True, user), data[pos : pos + n]))
            la, pos = la + n, pos + n
        for pa, chunk in pieces:
            self.mem.write(pa, chunk)
