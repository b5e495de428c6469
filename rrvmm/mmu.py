"""Guest virtual to physical translation by walking the guest's page tables.

Debuggers speak virtual addresses; the VMM holds physical RAM. The walk follows the mode
the guest is in (paging off, 32-bit, PAE, 4- or 5-level long mode) from CR0/CR4/EFER/CR3,
reading table entries through a callback so it works on any backend's RAM.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = ["PageFault", "translate", "read_virtual"]

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10
_P = 1
_PS = 1 << 7
_ADDR_MASK = 0x000F_FFFF_FFFF_F000


class PageFault(Exception):
    """The virtual address is not mapped (the walk met a non-present entry)."""

    def __init__(self, address: int) -> None:
        super().__init__(f"address {address:#x} is not mapped")
        self.address = address


def translate(
    va: int, cr0: int, cr3: int, cr4: int, efer: int, read_phys: Callable[[int, int], bytes]
) -> int:
    """The physical address of ``va``; PageFault if not mapped."""
    if not cr0 & CR0_PG:
        return va & 0xFFFF_FFFF
    if efer & EFER_LMA:
        levels = 5 if cr4 & CR4_LA57 else 4
        table = cr3 & _ADDR_MASK
        for level in range(levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            idx = (va >> shift) & 0x1FF
            (entry,) = struct.unpack("<Q", read_phys(table + idx * 8, 8))
            if not entry & _P:
                raise PageFault(va)
            if level in (2, 3) and entry & _PS:
                base = entry & _ADDR_MASK & ~((1 << shift) - 1)
                return base | (va & ((1 << shift) - 1))
            table = entry & _ADDR_MASK
        return table | (va & 0xFFF)
    va &= 0xFFFF_FFFF
    if cr4 & CR4_PAE:
        (pdpte,) = struct.unpack("<Q", read_phys((cr3 & 0xFFFF_FFE0) + (va >> 30) * 8, 8))
        if not pdpte & _P:
            raise PageFault(va)
        (pde,) = struct.unpack("<Q", read_phys((pdpte & _ADDR_MASK) + ((va >> 21) & 0x1FF) * 8, 8))
        if not pde & _P:
            raise PageFault(va)
        if pde & _PS:
            return (pde & _ADDR_MASK & ~0x1F_FFFF) | (va & 0x1F_FFFF)
        (pte,) = struct.unpack("<Q", read_phys((pde & _ADDR_MASK) + ((va >> 12) & 0x1FF) * 8, 8))
        if not pte & _P:
            raise PageFault(va)
        return (pte & _ADDR_MASK) | (va & 0xFFF)
    (pde,) = struct.unpack("<I", read_phys((cr3 & 0xFFFF_F000) + (va >> 22) * 4, 4))
    if not pde & _P:
        raise PageFault(va)
    if pde & _PS and cr4 & CR4_PSE:
        return (pde & 0xFFC0_0000) | ((pde & 0x1FE000) << 19) | (va & 0x3F_FFFF)
    (pte,) = struct.unpack("<I", read_phys((pde & 0xFFFF_F000) + ((va >> 12) & 0x3FF) * 4, 4))
    if not pte & _P:
        raise PageFault(va)
    return (pte & 0xFFFF_F000) | (va & 0xFFF)


def read_virtual(
    va: int,
    length: int,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    read_phys: Callable[[int, int], bytes],
) -> bytes:
    """``length`` bytes at ``va``, page by page (pages may map anywhere)."""
    out = bytearray()
    while length > 0:
        pa = translate(va, cr0, cr3, cr4, efer, read_phys)
        n = min(length, 0x1000 - (va & 0xFFF))
        out += read_phys(pa, n)
        va += n
        length -= n
    return bytes(out)
