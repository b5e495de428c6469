from __future__ import annotations

import struct

import pytest

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.machine.boot.kernel import load_kernel
from rrvmm.machine.boot.multiboot import (
    MBI_ADDR,
    MULTIBOOT_BOOTLOADER_MAGIC,
    KernelFormatError,
    find_multiboot_header,
    load_multiboot,
)

MB = 1 << 20


def _aout_kernel(load_addr: int = 0x100000, bss: int = 0x2000) -> bytes:
    """A flat a.out-kludge image: header at offset 0, code right after."""
    flags = (1 << 16) | 2
    code = b"\xf4" * 64
    size = 48 + len(code)
    hdr = struct.pack(
        "<III5I",
        0x1BADB002,
        flags,
        (-(0x1BADB002 + flags)) & 0xFFFFFFFF,
        load_addr,  # header_addr
        load_addr,  # load_addr
        load_addr + size,  # load_end_addr
        load_addr + size + bss,  # bss_end_addr
        load_addr + 48,  # entry
    )
    return hdr.ljust(48, b"\0") + code


def test_aout_kludge_layout() -> None:
    img, blobs = load_multiboot(_aout_kernel(), 16 * MB, "console=ttyS0 x=1")
    assert img.entry == 0x100000 + 48
    assert img.segments[0][0] == 0x100000
    assert img.zero == [(0x100000 + 112, 0x2000)]
    assert img.regs["rax"] == MULTIBOOT_BOOTLOADER_MAGIC and img.regs["rbx"] == MBI_ADDR
    where = dict(blobs)
    mbi = where[MBI_ADDR]
    flags, mem_lower, mem_upper, _boot, cmdline = struct.unpack_from("<5I", mbi)
    assert mem_lower == 640 and mem_upper == 15 * 1024
    assert where[cmdline] == b"console=ttyS0 x=1\0"
    mmap_len, mmap_addr = struct.unpack_from("<II", mbi, 44)
    entries = [struct.unpack_from("<IQQI", where[mmap_addr], i) for i in range(0, mmap_len, 24)]
    assert (20, 0x100000, 15 * MB, 1) in entries


def test_modules_are_placed_after_the_kernel() -> None:
    img, blobs = load_multiboot(_aout_kernel(), 16 * MB, "", [(b"initrd-bytes", "initrd")])
    where = dict(blobs)
    mbi = where[MBI_ADDR]
    count, addr = struct.unpack_from("<II", mbi, 20)
    assert count == 1
    start, end, name, _ = struct.unpack_from("<4I", where[addr])
    assert where[start] == b"initrd-bytes" and end - start == 12 and start % 4096 == 0
    assert where[name] == b"initrd\0"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "neither a multiboot kernel"),
        (b"\x7fELF" + bytes(100), "without a multiboot header"),
        (bytes(0x202) + b"HdrS" + bytes(64), "bzImage"),
        (b"hello world" * 100, "neither a multiboot kernel"),
    ],
)
def test_not_a_kernel(data: bytes, message: str) -> None:
    with pytest.raises(RrvmmError) as e:
        load_kernel(data, "k", 16 * MB, "", None)
    assert message in str(e.value)
    assert e.value.status == ExitStatus.NOT_A_KERNEL


def test_memory_too_small() -> None:
    with pytest.raises(RrvmmError) as e:
        load_kernel(_aout_kernel(load_addr=0x400000), "k", 4 * MB, "", None)
    assert e.value.status == ExitStatus.MEMORY_TOO_SMALL


def test_header_checksum_must_hold() -> None:
    bad = bytearray(_aout_kernel())
    bad[8] ^= 1
    assert find_multiboot_header(bytes(bad)) is None
    with pytest.raises(KernelFormatError):
        load_multiboot(bytes(bad), 16 * MB)


def test_built_guests_load(guest) -> None:  # noqa: ANN001
    for name in ("hello", "hello-aout"):
        img, _ = load_multiboot(guest(name).read_bytes(), 16 * MB)
        assert img.segments and 0x100000 <= img.entry < img.kernel_end


def test_a_kernel_loaded_at_0x8000_gets_its_boot_information_above_it() -> None:
    """kvm-unit-tests' realmode.flat loads at 0x8000, where rrvmm's boot information
    usually sits: as QEMU does, the information moves to the page after the kernel."""
    img, blobs = load_multiboot(_aout_kernel(load_addr=0x8000, bss=0x3000), 16 * MB, "a=1")
    top = 0x8000 + 112 + 0x3000
    base = (top + 0xFFF) & ~0xFFF
    assert img.gdt_base == base
    mbi_addr = img.regs["rbx"]
    assert mbi_addr > top
    where = dict(blobs)
    cmdline = struct.unpack_from("<5I", where[mbi_addr])[4]
    assert where[cmdline] == b"a=1\0"
    assert all(gpa >= base for gpa, _ in blobs)
    assert img.kernel_end >= base + 0x2000


def test_kernel_filling_low_memory_is_refused() -> None:
    with pytest.raises(KernelFormatError, match="no room below 640 KiB"):
        load_multiboot(_aout_kernel(load_addr=0x8000, bss=0x96000), 16 * MB)
