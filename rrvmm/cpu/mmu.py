"""Guest virtual to physical translation by walking the guest's page tables.

Debuggers speak virtual addresses; the VMM holds physical RAM; the software CPU delivers
events through the IDT and TSS by linear address. One walk serves all three: it follows
the mode the guest is in (paging off, 32-bit, PAE, 4- or 5-level long mode) from
CR0/CR4/EFER/CR3, reading table entries through a callback so it works on any backend's
RAM, and hands back the entries it used so a caller acting for the CPU can check
permissions and set accessed/dirty bits the way the CPU does.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PageFault", "Entry", "walk", "translate", "read_virtual"]

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10
_P = 1
_PS = 1 << 7
_ADDR_MASK = 0x000F_FFFF_FFFF_F000

ReadPhys = Callable[[int, int], bytes]
Entry = tuple[int, int, int]  # (physical address of the entry, its value, its size)


class PageFault(Exception):
    """The virtual address is not mapped (the walk met a non-present entry), or is no
    address at all in the current mode (non-canonical, or beyond the mode's width)."""

    def __init__(self, address: int, why: str = "is not mapped") -> None:
        super().__init__(f"address {address:#x} {why}")
        self.address = address


def _check_canonical(va: int, la57: bool) -> None:
    """Long mode: 48 (57 with LA57) significant bits, the rest copies of the top one; the
    hole in between faults on a real CPU too, and a debugger may ask for any number."""
    bits = 57 if la57 else 48
    if va < 0 or va >> 64 or (va >> (bits - 1)) not in (0, (1 << (65 - bits)) - 1):
        raise PageFault(va, "is not a canonical address")


def _entry(read_phys: ReadPhys, addr: int, size: int, va: int) -> Entry:
    value = int.from_bytes(read_phys(addr, size), "little")
    if not value & _P:
        raise PageFault(va)
    return (addr, value, size)


def walk(
    va: int, cr0: int, cr3: int, cr4: int, efer: int, read_phys: ReadPhys
) -> tuple[int, list[Entry]]:
    """The physical address of ``va`` and the entries the walk went through, top first.

    Only entries whose R/W, U/S and accessed bits mean something are listed (a PAE
    PDPTE has none). PageFault if an entry on the way is not present.
    """
    if efer & EFER_LMA:
        _check_canonical(va, bool(cr4 & CR4_LA57))
    elif va < 0 or va >> 64:
        raise PageFault(va, "is beyond the 64-bit address space")
    if not cr0 & CR0_PG:
        return va & 0xFFFF_FFFF, []
    entries: list[Entry] = []
    if efer & EFER_LMA:
        levels = 5 if cr4 & CR4_LA57 else 4
        table = cr3 & _ADDR_MASK
        for level in range(levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            e = _entry(read_phys, table + ((va >> shift) & 0x1FF) * 8, 8, va)
            entries.append(e)
            if level == 1 or (level in (2, 3) and e[1] & _PS):
                mask = (1 << shift) - 1
                return (e[1] & _ADDR_MASK & ~mask) | (va & mask), entries
            table = e[1] & _ADDR_MASK
        raise AssertionError("unreachable")
    va &= 0xFFFF_FFFF
    if cr4 & CR4_PAE:
        _, pdpte, _ = _entry(read_phys, (cr3 & 0xFFFF_FFE0) + (va >> 30) * 8, 8, va)
        table = pdpte & _ADDR_MASK
        for shift in (21, 12):
            e = _entry(read_phys, table + ((va >> shift) & 0x1FF) * 8, 8, va)
            entries.append(e)
            if shift == 12 or e[1] & _PS:
                mask = (1 << shift) - 1
                return (e[1] & _ADDR_MASK & ~mask) | (va & mask), entries
            table = e[1] & _ADDR_MASK
    pde = _entry(read_phys, (cr3 & 0xFFFF_F000) + (va >> 22) * 4, 4, va)
    entries.append(pde)
    if pde[1] & _PS and cr4 & CR4_PSE:
        v = pde[1]
        return (v & 0xFFC0_0000) | ((v & 0x1F_E000) << 19) | (va & 0x3F_FFFF), entries
    pte = _entry(read_phys, (pde[1] & 0xFFFF_F000) + ((va >> 12) & 0x3FF) * 4, 4, va)
    entries.append(pte)
    return (pte[1] & 0xFFFF_F000) | (va & 0xFFF), entries


def translate(va: int, cr0: int, cr3: int, cr4: int, efer: int, read_phys: ReadPhys) -> int:
    """The physical address of ``va``; PageFault if not mapped."""
    return walk(va, cr0, cr3, cr4, efer, read_phys)[0]


def read_virtual(
    va: int,
    length: int,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    read_phys: ReadPhys,
) -> bytes:
    """``length`` bytes at ``va``, page by page (pages may map anywhere).

    Outside long mode the range must lie below 4 GiB: a debugger's address above it names
    nothing (the walk itself wraps, as a 32-bit CPU's linear addresses do).
    """
    if not efer & EFER_LMA and not 0 <= va <= va + length <= 1 << 32:
        raise PageFault(va, "is beyond the 32-bit address space")
    out = bytearray()
    while length > 0:
        pa = translate(va, cr0, cr3, cr4, efer, read_phys)
        n = min(length, 0x1000 - (va & 0xFFF))
        out += read_phys(pa, n)
        va += n
        length -= n
    return bytes(out)
