from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.machine.boot import linux as L
from rrvmm.machine.boot.kernel import load_kernel
from rrvmm.machine.boot.multiboot import KernelFormatError, MemoryTooSmall

MB = 1 << 20
GB = 1 << 30
INIT_SIZE = 0x800000  # 8 MiB


def _bzimage(
    *,
    version: int = 0x020F,
    setup_sects: int = 3,
    xloadflags: int = 0x7F,
    pref_address: int = 0x1000000,
    init_size: int = INIT_SIZE,
    relocatable: int = 1,
    kernel_alignment: int = 0x200000,
    initrd_addr_max: int = 0x7FFFFFFF,
    cmdline_size: int = 2047,
    loadflags: int = L.LOADED_HIGH,
    payload: bytes = b"\x90" * 0x200 + b"\xf4" * 0x600,
) -> bytes:
    """A minimal bzImage: setup sectors with a 2.15-style header, then a payload."""
    setup = bytearray((setup_sects or 4) * 512 + 512)
    setup[L.OFF_SETUP_SECTS] = setup_sects
    struct.pack_into("<H", setup, L.OFF_BOOT_FLAG, L.BOOT_FLAG)
    setup[L.OFF_JUMP : L.OFF_JUMP + 2] = bytes([0xEB, 0x6A])  # jmp to 0x26c: header end
    setup[L.OFF_HEADER : L.OFF_HEADER + 4] = b"HdrS"
    struct.pack_into("<H", setup, L.OFF_VERSION, version)
    setup[L.OFF_TYPE_OF_LOADER] = 0
    setup[L.OFF_LOADFLAGS] = loadflags
    struct.pack_into("<I", setup, L.OFF_CODE32_START, 0x100000)
    struct.pack_into("<I", setup, L.OFF_INITRD_ADDR_MAX, initrd_addr_max)
    struct.pack_into("<I", setup, L.OFF_KERNEL_ALIGNMENT, kernel_alignment)
    setup[L.OFF_RELOCATABLE] = relocatable
    struct.pack_into("<H", setup, L.OFF_XLOADFLAGS, xloadflags)
    struct.pack_into("<I", setup, L.OFF_CMDLINE_SIZE, cmdline_size)
    struct.pack_into("<Q", setup, L.OFF_PREF_ADDRESS, pref_address)
    struct.pack_into("<I", setup, L.OFF_INIT_SIZE, init_size)
    struct.pack_into("<I", setup, 0x268, 0x1234)  # kernel_info_offset: copied as is
    return bytes(setup) + payload


def _blob_at(blobs: list[tuple[int, bytes]], gpa: int) -> bytes:
    return dict(blobs)[gpa]


def _zero_page(blobs: list[tuple[int, bytes]]) -> bytes:
    zp = _blob_at(blobs, L.BOOT_PARAMS_ADDR)
    assert len(zp) == 4096
    return zp


def _u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def _e820(zp: bytes) -> list[tuple[int, int, int]]:
    n = zp[L.BP_E820_ENTRIES]
    return [struct.unpack_from("<QQI", zp, L.BP_E820_TABLE + 20 * i) for i in range(n)]


def test_layout_and_zero_page() -> None:
    data = _bzimage()
    img, blobs = L.load_bzimage(data, 64 * MB, "console=ttyS0 nokaslr")
    assert img.mode == "long64" and img.page_table == L.PML4_ADDR
    assert img.segments == [(0x1000000, data[4 * 512 :])]
    assert img.entry == 0x1000200
    assert img.regs["rip"] == 0x1000200 and img.regs["rsi"] == L.BOOT_PARAMS_ADDR
    assert img.regs["rflags"] & 0x200 == 0  # interrupts off
    assert img.kernel_end == 0x1000000 + INIT_SIZE
    assert "2.15" in img.format
    zp = _zero_page(blobs)
    # the setup header is copied from 0x1f1 to its end (0x202 + jump offset 0x6a)
    assert zp[0x1F1:0x210] == data[0x1F1:0x210]
    assert zp[0x22C:0x26C] == data[0x22C:0x26C]
    assert zp[0x26C:0x2D0] == bytes(0x2D0 - 0x26C)
    assert zp[L.OFF_TYPE_OF_LOADER] == 0xFF
    assert zp[L.OFF_LOADFLAGS] & L.LOADED_HIGH
    assert zp[L.BP_SENTINEL] == 0
    assert _u32(zp, L.OFF_CMD_LINE_PTR) == L.CMDLINE_ADDR
    assert _blob_at(blobs, L.CMDLINE_ADDR) == b"console=ttyS0 nokaslr\0"
    assert _u32(zp, L.OFF_RAMDISK_IMAGE) == 0 and _u32(zp, L.OFF_RAMDISK_SIZE) == 0
    assert zp[:0x1E0] == bytes(0x1E0)  # screen_info, apm, edd...: zero


def test_e820_small_memory() -> None:
    _img, blobs = L.load_bzimage(_bzimage(), 64 * MB)
    assert _e820(_zero_page(blobs)) == [
        (0, 0xA0000, 1),
        (0xA0000, 0x60000, 2),
        (0x100000, 63 * MB, 1),
    ]


@pytest.mark.parametrize(
    ("memory", "high"),
    [(3 * GB, None), (4 * GB, (1 << 32, 1 * GB, 1)), (5 * GB, (1 << 32, 2 * GB, 1))],
)
def test_e820_pci_hole(memory: int, high: tuple[int, int, int] | None) -> None:
    table = L.e820_map(memory)
    assert table[2] == (0x100000, 0xC0000000 - 0x100000, 1)
    assert (table[3] if len(table) > 3 else None) == high
    assert sum(s for _a, s, t in table if t == 1) == memory - 0x60000


def test_initrd_is_placed_high_and_page_aligned() -> None:
    initrd = bytes(range(256)) * 4000 + b"x"  # 1,024,001 bytes
    img, blobs = L.load_bzimage(_bzimage(), 64 * MB, "", initrd)
    zp = _zero_page(blobs)
    addr, size = _u32(zp, L.OFF_RAMDISK_IMAGE), _u32(zp, L.OFF_RAMDISK_SIZE)
    assert size == len(initrd)
    assert addr % 4096 == 0
    assert addr + size <= 64 * MB and 64 * MB - (addr + size) < 4096
    assert _blob_at(blobs, addr) == initrd
    assert addr >= 0x1000000 + INIT_SIZE
    assert img.kernel_end == addr + size


def test_initrd_respects_initrd_addr_max() -> None:
    data = _bzimage(initrd_addr_max=0x37FFFFFF)  # the classic 896 MiB limit
    _img, blobs = L.load_bzimage(data, 2 * GB, "", b"i" * 5000)
    zp = _zero_page(blobs)
    addr = _u32(zp, L.OFF_RAMDISK_IMAGE)
    assert addr + 5000 <= 0x38000000 and addr == (0x38000000 - 5000) & ~0xFFF


def test_initrd_stays_below_the_pci_hole() -> None:
    data = _bzimage(initrd_addr_max=0xFFFFFFFF)
    _img, blobs = L.load_bzimage(data, 6 * GB, "", b"i" * 5000)
    addr = _u32(_zero_page(blobs), L.OFF_RAMDISK_IMAGE)
    assert addr + 5000 <= 0xC0000000 and addr > 0xBFF00000


def test_page_tables_identity_map_4gib() -> None:
    _img, blobs = L.load_bzimage(_bzimage(), 64 * MB)
    pml4 = _blob_at(blobs, L.PML4_ADDR)
    pdpt = _blob_at(blobs, L.PDPT_ADDR)
    pds = _blob_at(blobs, L.PD_ADDR)
    assert len(pml4) == len(pdpt) == 4096 and len(pds) == 4 * 4096
    assert struct.unpack_from("<Q", pml4, 0)[0] == L.PDPT_ADDR | 3
    assert pml4[8:] == bytes(4088)
    for i in range(4):
        assert struct.unpack_from("<Q", pdpt, 8 * i)[0] == (L.PD_ADDR + 4096 * i) | 3
    assert pdpt[32:] == bytes(4096 - 32)
    entries = struct.unpack("<2048Q", pds)
    for i in (0, 1, 8, 511, 512, 1535, 2047):
        assert entries[i] == (i << 21) | 0x83  # present, writable, 2 MiB page
    # the tables, GDT, boot_params and command line do not overlap, and all sit in low RAM
    spans = sorted((a, a + len(b)) for a, b in blobs)
    for (_s0, e0), (s1, _e1) in zip(spans, spans[1:], strict=False):
        assert e0 <= s1
    assert L.PD_ADDR + 4 * 4096 <= L.CMDLINE_ADDR < 0xA0000


def _walk(blobs: list[tuple[int, bytes]], va: int) -> int:
    """Translate ``va`` through the loader's page tables (4-level, 2 MiB pages)."""
    mem = dict(blobs)

    def entry(table: int, index: int) -> int:
        for base, body in mem.items():
            if base <= table + 8 * index < base + len(body):
                return struct.unpack_from("<Q", body, table + 8 * index - base)[0]
        raise AssertionError(f"no table at {table:#x}")

    e = entry(L.PML4_ADDR, (va >> 39) & 511)
    assert e & 1
    e = entry(e & ~0xFFF, (va >> 30) & 511)
    assert e & 1
    e = entry(e & ~0xFFF, (va >> 21) & 511)
    assert e & 1 and e & 0x80
    return (e & ~0x1FFFFF & ((1 << 52) - 1)) | (va & 0x1FFFFF)


@pytest.mark.parametrize("va", [0, 0x7000, 0x1000200, 0x3FFFFFF, 0xBFFFF000, 0xFFFFFFFF])
def test_page_tables_translate_identically(va: int) -> None:
    _img, blobs = L.load_bzimage(_bzimage(), 64 * MB)
    assert _walk(blobs, va) == va


def test_gdt_and_sregs() -> None:
    _img, blobs = L.load_bzimage(_bzimage(), 64 * MB)
    gdt = _blob_at(blobs, L.GDT_ADDR)
    code = struct.unpack_from("<Q", gdt, L.BOOT_CS)[0]
    data = struct.unpack_from("<Q", gdt, L.BOOT_DS)[0]
    assert (code >> 53) & 1 == 1 and (code >> 54) & 1 == 0  # L=1, D=0
    assert (code >> 40) & 0x9A == 0x9A  # present, code, readable
    assert (data >> 40) & 0x92 == 0x92  # present, data, writable
    s = L.long_mode_sregs(L.PML4_ADDR)
    assert s["cs"]["selector"] == 0x10 and s["cs"]["l"] == 1 and s["cs"]["db"] == 0
    for seg in ("ds", "es", "ss"):
        assert s[seg]["selector"] == 0x18
    assert s["cr3"] == L.PML4_ADDR
    assert s["cr0"] & 0x80000001 == 0x80000001
    assert s["cr4"] & 0x20 and s["efer"] & 0x500 == 0x500
    assert s["gdt"] == {"base": L.GDT_ADDR, "limit": len(gdt) - 1}


def test_cmdline_limit() -> None:
    data = _bzimage(cmdline_size=16)
    L.load_bzimage(data, 64 * MB, "x" * 16)
    with pytest.raises(KernelFormatError, match="at most 16"):
        L.load_bzimage(data, 64 * MB, "x" * 17)


def test_setup_sects_zero_means_four() -> None:
    data = _bzimage(setup_sects=0)
    img, _ = L.load_bzimage(data, 64 * MB)
    assert img.segments[0][1] == data[5 * 512 :]


def test_non_relocatable_kernel_loads_at_1mib() -> None:
    img, _ = L.load_bzimage(_bzimage(relocatable=0), 64 * MB)
    assert img.segments[0][0] == 0x100000 and img.entry == 0x100200
    assert img.kernel_end == 0x1000000 + INIT_SIZE  # decompressed at pref_address


def test_pref_address_is_aligned_up() -> None:
    img, _ = L.load_bzimage(_bzimage(pref_address=0x1100000), 64 * MB)
    assert img.segments[0][0] == 0x1200000


@pytest.mark.parametrize(
    ("kwargs", "memory", "initrd", "exc", "match"),
    [
        ({"version": 0x020B}, 64 * MB, None, KernelFormatError, "2.11 is too old"),
        ({"xloadflags": 0x2}, 64 * MB, None, KernelFormatError, "no 64-bit entry"),
        ({"loadflags": 0}, 64 * MB, None, KernelFormatError, "zImage"),
        ({"kernel_alignment": 0x300000}, 64 * MB, None, KernelFormatError, "power of two"),
        ({"init_size": 0}, 64 * MB, None, KernelFormatError, "init_size is 0"),
        ({"pref_address": 0x80000}, 64 * MB, None, KernelFormatError, "below 1 MiB"),
        ({}, 23 * MB, None, MemoryTooSmall, "needs RAM up to 0x1800000"),
        ({}, 25 * MB, b"i" * (2 * MB), MemoryTooSmall, "need 26 MiB"),
        ({"initrd_addr_max": 0x01FFFFFF}, 64 * MB, b"i" * (9 * MB), KernelFormatError,
         "initrd is 9 MiB, too large"),
    ],
)  # fmt: skip
def test_errors(kwargs, memory, initrd, exc, match) -> None:
    with pytest.raises(exc, match=match) as e:
        L.load_bzimage(_bzimage(**kwargs), memory, "", initrd)
    assert "\n" not in str(e.value)


def test_truncated_header_and_no_payload() -> None:
    good = _bzimage()
    with pytest.raises(KernelFormatError, match="no kernel after"):
        L.load_bzimage(good[: 4 * 512 + 0x100], 64 * MB)
    bad_flag = bytearray(good)
    bad_flag[L.OFF_BOOT_FLAG] = 0
    with pytest.raises(KernelFormatError, match="0xAA55"):
        L.load_bzimage(bytes(bad_flag), 64 * MB)
    short = bytearray(good)
    short[L.OFF_JUMP + 1] = 0x20  # header ends before init_size
    with pytest.raises(KernelFormatError, match="cut short"):
        L.load_bzimage(bytes(short), 64 * MB)


def test_load_kernel_dispatches_bzimages() -> None:
    img, _ = load_kernel(_bzimage(), "bz", 64 * MB, "quiet", b"rd")
    assert img.mode == "long64"
    with pytest.raises(RrvmmError) as e:
        load_kernel(_bzimage(), "bz", 16 * MB, "", None)
    assert e.value.status == ExitStatus.MEMORY_TOO_SMALL and "raise --memory" in str(e.value)
    with pytest.raises(RrvmmError) as e:
        load_kernel(_bzimage(version=0x0204), "bz", 64 * MB, "", None)
    assert e.value.status == ExitStatus.NOT_A_KERNEL and str(e.value).startswith("bz: ")


# --- the real kernel, when scripts/get-linux-guest.py has cached it (no network here) ---
def _cached(name: str) -> Path:
    root = os.environ.get("RRVMM_CACHE")
    base = Path(root) / "linux" if root else Path.home() / ".cache" / "rrvmm" / "linux"
    path = base / name
    if not path.exists():
        pytest.skip(f"{path} not cached (run scripts/get-linux-guest.py)")
    return path


def test_debian_cloud_kernel_layout() -> None:
    data = _cached("vmlinuz").read_bytes()
    initrd = _cached("initrd.img").read_bytes()
    img, blobs = L.load_bzimage(data, 256 * MB, "console=ttyS0 nokaslr", initrd)
    hdr = L.BzImageHeader(data)
    assert hdr.version >= 0x020C and hdr.xloadflags & L.XLF_KERNEL_64 and hdr.relocatable
    assert img.segments[0][0] == hdr.pref_address == 0x1000000
    zp = _zero_page(blobs)
    addr = _u32(zp, L.OFF_RAMDISK_IMAGE)
    assert addr >= 0x1000000 + hdr.init_size and addr + len(initrd) <= 256 * MB
    with pytest.raises(MemoryTooSmall):
        L.load_bzimage(data, 64 * MB, "", initrd)


@pytest.mark.kvm
def test_kvm_enters_the_decompressor_in_long_mode() -> None:
    """The 64-bit entry on KVM: the decompressor's first serial line comes out.

    Only the first line: the rest of a boot takes minutes in kvm_pvm's emulator.
    """
    mark = b"KASLR disabled: 'nokaslr' on cmdline."
    kernel, initrd = _cached("vmlinuz"), _cached("initrd.img")
    append = "console=ttyS0 earlyprintk=ttyS0 noapic nolapic nokaslr panic=-1"
    cmd = [sys.executable, "-m", "rrvmm", "run", "--backend", "kvm", "--kernel", str(kernel),
           "--initrd", str(initrd), "--append", append, "--memory", "256M"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while mark not in seen and time.monotonic() < deadline:
            if proc.poll() is not None:
                seen += proc.stdout.read()
                break
            if select.select([proc.stdout], [], [], 1)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert mark in seen, (seen[-500:], err[-500:])
