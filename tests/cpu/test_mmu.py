"""The one page walk (rrvmm.cpu.mmu) in every paging mode, and the software CPU's use of it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rrvmm.cpu.mmu import PageFault, read_virtual, translate, walk
from rrvmm.soft.mmu import GuestFault, PhysMemory, Walker

PG, PAE, PSE, LA57, LMA, WP = 1 << 31, 1 << 5, 1 << 4, 1 << 12, 1 << 10, 1 << 16
P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80


class Ram:
    """Sparse guest RAM for building page tables by hand."""

    def __init__(self, size: int = 0x400000) -> None:
        self.buf = bytearray(size)

    def put(self, addr: int, value: int, size: int = 8) -> None:
        self.buf[addr : addr + size] = value.to_bytes(size, "little")

    def get(self, addr: int, size: int = 8) -> int:
        return int.from_bytes(self.buf[addr : addr + size], "little")

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.buf[addr : addr + size])


def _long_mode(ram: Ram, levels: int = 4, flags: int = P | RW) -> int:
    """Tables mapping VA 0x7f_c020_3000 -> PA 0x5000, a 2 MiB page at 0x4000_0000 -> 0x200000
    and a 1 GiB page at 0x80_0000_0000... (beyond); returns CR3."""
    va = 0x7F_C020_3000
    tables = [0x10000 + i * 0x1000 for i in range(levels)]
    for lvl, table in enumerate(tables):
        shift = 12 + 9 * (levels - 1 - lvl)
        nxt = tables[lvl + 1] if lvl + 1 < levels else 0x5000
        ram.put(table + ((va >> shift) & 0x1FF) * 8, nxt | flags)
    # a 2 MiB page in the same PDPT: VA 0x4000_0000 -> PA 0x200000
    pdpt, pd2 = tables[-3], 0x20000
    ram.put(pdpt + 1 * 8, pd2 | flags)
    ram.put(pd2, 0x200000 | flags | PS)
    # a 1 GiB page: VA 0x8000_0000 -> PA 0 (PDPT index 2)
    ram.put(pdpt + 2 * 8, 0 | flags | PS)
    return tables[0]


@pytest.mark.parametrize("levels", [4, 5])
def test_long_mode_4k_2m_and_1g_pages(levels: int) -> None:
    ram = Ram()
    cr3 = _long_mode(ram, levels)
    cr4 = PAE | (LA57 if levels == 5 else 0)
    pa, entries = walk(0x7F_C020_3123, PG, cr3, cr4, LMA, ram.read)
    assert pa == 0x5123 and len(entries) == levels
    assert translate(0x4012_3456, PG, cr3, cr4, LMA, ram.read) == 0x323456
    assert translate(0x8765_4321, PG, cr3, cr4, LMA, ram.read) == 0x0765_4321
    with pytest.raises(PageFault) as e:
        translate(0xC000_0000, PG, cr3, cr4, LMA, ram.read)
    assert e.value.address == 0xC000_0000


def test_pae_leaves_the_pdpte_out_of_the_entries() -> None:
    ram = Ram()
    ram.put(0x1000 + 3 * 8, 0x2000 | P)  # PDPTE for VA 0xC000_0000..
    ram.put(0x2000 + 1 * 8, 0x3000 | P | RW)  # PDE index 1 -> page table
    ram.put(0x3000 + 5 * 8, 0x7000 | P | RW)  # PTE index 5
    ram.put(0x2000 + 2 * 8, 0x400000 | P | RW | PS)  # a 2 MiB page
    pa, entries = walk(0xC020_5ABC, PG, 0x1000, PAE, 0, ram.read)
    assert pa == 0x7ABC and [e[0] for e in entries] == [0x2008, 0x3028]
    assert translate(0xC041_0000, PG, 0x1000, PAE, 0, ram.read) == 0x410000
    with pytest.raises(PageFault):
        translate(0x0, PG, 0x1000, PAE, 0, ram.read)  # PDPTE 0 not present


def test_32bit_paging_with_and_without_pse() -> None:
    ram = Ram()
    ram.put(0x1000 + 0x300 * 4, 0x2000 | P | RW, 4)  # PDE for VA 0xC000_0000
    ram.put(0x2000 + 7 * 4, 0x9000 | P, 4)
    big = 0x00C0_0000 | P | RW | PS | (0x3 << 13)  # 4 MiB page, PA bits 32-33 = 3
    ram.put(0x1000 + 0x301 * 4, big, 4)
    assert translate(0xC000_7010, PG, 0x1000, 0, 0, ram.read) == 0x9010
    assert translate(0xC050_0001, PG, 0x1000, PSE, 0, ram.read) == 0x3_00D0_0001
    with pytest.raises(PageFault):
        translate(0xC050_0001, PG, 0x1000, 0, 0, ram.read)  # without PSE: a table at 0xC00000


def test_paging_off_and_reads_across_pages() -> None:
    ram = Ram()
    assert translate(0x1_2345_6789, 0, 0, 0, 0, ram.read) == 0x2345_6789
    ram.put(0x1000 + 0x300 * 4, 0x2000 | P, 4)
    ram.put(0x2000 + 0 * 4, 0x8000 | P, 4)
    ram.put(0x2000 + 1 * 4, 0x3000 | P, 4)  # the next virtual page is physically earlier
    ram.buf[0x8FFE:0x9000] = b"ab"
    ram.buf[0x3000:0x3002] = b"cd"
    assert read_virtual(0xC000_0FFE, 4, PG, 0x1000, 0, 0, ram.read) == b"abcd"


def _walker(ram: Ram, cr0: int, cr3: int, cr4: int, efer: int) -> Walker:
    engine = SimpleNamespace(cr={0: cr0, 3: cr3, 4: cr4}, efer=SimpleNamespace(value=efer))
    return Walker(PhysMemory(ram.buf, len(ram.buf)), engine)


def test_software_cpu_checks_permissions_and_sets_accessed_and_dirty() -> None:
    ram = Ram()
    cr3 = _long_mode(ram, 4, P)  # read-only, supervisor-only everywhere
    w = _walker(ram, PG | WP, cr3, PAE, LMA)
    va = 0x7F_C020_3000
    assert w.translate(va) == 0x5000
    leaf = 0x13000 + ((va >> 12) & 0x1FF) * 8
    assert ram.get(leaf) & (A | D) == A  # read: accessed, not dirty
    with pytest.raises(GuestFault) as e:
        w.translate(va, write=True)
    assert (e.value.vector, e.value.error_code, e.value.cr2) == (14, 1 | 2, va)
    with pytest.raises(GuestFault) as e:
        w.translate(va, user=True)
    assert e.value.error_code == 1 | 4
    with pytest.raises(GuestFault) as e:
        w.translate(0xC000_0000, write=True)
    assert e.value.error_code == 2 and e.value.cr2 == 0xC000_0000  # not present
    with pytest.raises(GuestFault) as e:
        w.translate(0x0000_8000_0000_0000)  # not canonical: #GP, not #PF
    assert e.value.vector == 13
    # supervisor writes ignore R/W when CR0.WP is clear, and set dirty on the leaf only
    w = _walker(ram, PG, cr3, PAE, LMA)
    w.write(va, b"x")
    assert ram.buf[0x5000] == ord("x") and ram.get(leaf) & D
    assert not ram.get(0x10000 + ((va >> 39) & 0x1FF) * 8) & D
