"""Multiboot v1 loading (ELF32 images and the a.out kludge), as `qemu -kernel` does it.

The loader only computes what goes where (``BootImage``); the machine writes it into guest
RAM and sets the CPU state, so both backends boot the same bytes.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

__all__ = [
    "BootImage",
    "KernelFormatError",
    "MemoryTooSmall",
    "find_multiboot_header",
    "load_multiboot",
    "MULTIBOOT_BOOTLOADER_MAGIC",
]

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192
MB_FLAG_PAGE_ALIGN = 1 << 0
MB_FLAG_MEMORY_INFO = 1 << 1
MB_FLAG_VIDEO_MODE = 1 << 2
MB_FLAG_AOUT_KLUDGE = 1 << 16

# multiboot_info.flags bits
MBI_MEMORY = 1 << 0
MBI_CMDLINE = 1 << 2
MBI_MODS = 1 << 3
MBI_MMAP = 1 << 6
MBI_LOADER_NAME = 1 << 9

# Where the boot information lives: 0x8000-0xA000 (below the 640 KiB hole, above the
# BDA/IVT) unless the kernel itself is loaded there (kvm-unit-tests' realmode.flat is, at
# 0x8000); then, as QEMU does, the page after the kernel's end. Offsets in the area:
GDT_ADDR = 0x8000
MBI_ADDR = 0x9000
_MBI_OFF = 0x1000
_CMDLINE_OFF = 0x1100
_CMDLINE_MAX = 0x0E00
_MMAP_OFF = 0x1F00
_MODS_OFF = 0x1E00
_LOADER_NAME_OFF = 0x1EC0
_LOADER_NAME = b"rrvmm\0"
_BOOT_INFO_SIZE = 0x2000
_BOOT_INFO_END = GDT_ADDR + _BOOT_INFO_SIZE
LOW_MEMORY_KB = 640


class KernelFormatError(ValueError):
    """The file is not a kernel rrvmm can boot; the message says why, in one line."""


class MemoryTooSmall(KernelFormatError):
    """The kernel is fine, the guest RAM is too small to hold it."""


@dataclass
class BootImage:
    """What to write into guest RAM and how to enter the kernel."""

    segments: list[tuple[int, bytes]] = field(default_factory=list)  # (gpa, bytes)
    zero: list[tuple[int, int]] = field(default_factory=list)  # (gpa, length) bss
    entry: int = 0
    mode: str = "protected32"  # the CPU mode at entry: "protected32" or "long64"
    page_table: int = 0  # CR3 (the PML4's address) when mode is "long64"
    regs: dict[str, int] = field(default_factory=dict)
    kernel_end: int = 0  # first byte above everything the loader placed
    gdt_base: int = GDT_ADDR  # where the loader put the flat GDT CS/DS select from
    cmdline_addr: int = 0  # where the loader put the kernel command line (fw_cfg says it)
    format: str = ""


def find_multiboot_header(data: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(offset, header words) of a valid multiboot header in the first 8 KiB, if any."""
    limit = min(len(data), MULTIBOOT_SEARCH) - 12
    for off in range(0, limit + 1, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            words = struct.unpack_from("<8I", data + bytes(32), off + 12)
            return off, (flags, *words)
    return None


def _load_aout(data: bytes, off: int, words: tuple[int, ...], img: BootImage) -> None:
    header_addr, load_addr, load_end, bss_end, entry = words[1:6]
    if load_addr > header_addr:
        raise KernelFormatError("a.out kludge: load_addr is above header_addr")
    file_start = off - (header_addr - load_addr)
    if file_start < 0:
        raise KernelFormatError("a.out kludge: load_addr points before the file")
    size = (load_end - load_addr) if load_end else len(data) - file_start
    if size <= 0 or file_start + size > len(data):
        raise KernelFormatError("a.out kludge: load_end_addr is past the end of the file")
    img.segments.append((load_addr, data[file_start : file_start + size]))
    end = load_addr + size
    if bss_end > end:
        img.zero.append((end, bss_end - end))
        end = bss_end
    img.entry = entry
    img.kernel_end = end
    img.format = "multiboot (a.out kludge)"


def _load_elf(data: bytes, img: BootImage) -> None:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise KernelFormatError(
                f"multiboot ELF must be ELF32 i386 (got ELF{elf.elfclass} {elf['e_machine']});"
                " convert with objcopy -O elf32-i386"
            )
        end = 0
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            paddr, filesz, memsz = seg["p_paddr"], seg["p_filesz"], seg["p_memsz"]
            body = seg.data()[:filesz]
            if len(body) != filesz:
                raise KernelFormatError("ELF segment runs past the end of the file")
            img.segments.append((paddr, body))
            if memsz > filesz:
                img.zero.append((paddr + filesz, memsz - filesz))
            end = max(end, paddr + memsz)
        if not img.segments:
            raise KernelFormatError("ELF file has no loadable segments")
        img.entry = elf["e_entry"]
        img.kernel_end = end
        img.format = "multiboot (ELF32)"
    except (ELFError, struct.error) as e:
        raise KernelFormatError(f"broken ELF: {e}") from None


def _boot_info_base(img: BootImage) -> int:
    """Where the boot information area goes: 0x8000, or above a kernel loaded there.

    QEMU puts its multiboot information right after the kernel; rrvmm keeps its fixed
    place below 640 KiB for every kernel that leaves it free, and otherwise follows QEMU:
    the first page above the kernel's low segments (and its bss, if that ends there).
    """
    spans = [(gpa, gpa + len(body)) for gpa, body in img.segments]
    if img.zero:
        spans += [(gpa, gpa + n) for gpa, n in img.zero]

    def free(base: int) -> bool:
        return all(end <= base or start >= base + _BOOT_INFO_SIZE for start, end in spans)

    if free(GDT_ADDR):
        return GDT_ADDR
    low_top = max(end for start, end in spans if start < LOW_MEMORY_KB * 1024)
    base = (low_top + 0xFFF) & ~0xFFF
    if base + _BOOT_INFO_SIZE > LOW_MEMORY_KB * 1024 or not free(base):
        raise KernelFormatError(
            f"kernel segments leave no room below 640 KiB for the boot information"
            f" ({_BOOT_INFO_SIZE:#x} bytes)"
        )
    return base


def load_multiboot(
    data: bytes,
    memory_size: int,
    cmdline: str = "",
    modules: list[tuple[bytes, str]] | None = None,
) -> tuple[BootImage, list[tuple[int, bytes]]]:
    """Lay out a multiboot kernel; returns the image and the boot-info blobs to write."""
    found = find_multiboot_header(data)
    if found is None:
        raise KernelFormatError("no multiboot header in the first 8 KiB")
    off, words = found
    flags = words[0]
    img = BootImage()
    if flags & MB_FLAG_AOUT_KLUDGE:
        _load_aout(data, off, words, img)
    elif data[:4] == b"\x7fELF":
        _load_elf(data, img)
    else:
        raise KernelFormatError("multiboot header without a.out kludge in a non-ELF file")
    base = _boot_info_base(img)
    if base != GDT_ADDR:  # modules go above it
        img.kernel_end = max(img.kernel_end, base + _BOOT_INFO_SIZE)
    for gpa, body in img.segments:
        if gpa + len(body) > memory_size:
            raise MemoryTooSmall(
                f"kernel needs memory up to {gpa + len(body):#x}, the guest has {memory_size:#x}"
            )
    if img.kernel_end > memory_size:
        raise MemoryTooSmall("kernel's bss runs past the end of guest memory")

    blobs: list[tuple[int, bytes]] = []
    upper_kb = (min(memory_size, 0xC000_0000) - 0x100000) // 1024
    mbi_flags = MBI_MEMORY | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME
    cmd = cmdline.encode()[: _CMDLINE_MAX - 1] + b"\0"
    mbi_addr, cmdline_addr, mmap_addr = base + _MBI_OFF, base + _CMDLINE_OFF, base + _MMAP_OFF
    mods_addr, loader_name_addr = base + _MODS_OFF, base + _LOADER_NAME_OFF
    blobs.append((cmdline_addr, cmd))
    img.cmdline_addr = cmdline_addr
    blobs.append((loader_name_addr, _LOADER_NAME))

    # memory map: size, base, length, type (1 = RAM, 2 = reserved)
    regions = [(0, LOW_MEMORY_KB * 1024, 1), (0xF0000, 0x10000, 2)]
    regions.append((0x100000, min(memory_size, 0xC000_0000) - 0x100000, 1))
    if memory_size > 0xC000_0000:
        regions.append((0x1_0000_0000, memory_size - 0xC000_0000, 1))
    mmap = b"".join(struct.pack("<IQQI", 20, b, n, t) for b, n, t in regions)
    blobs.append((mmap_addr, mmap))

    mods_count = 0
    if modules:
        mbi_flags |= MBI_MODS
        addr = (img.kernel_end + 0xFFF) & ~0xFFF
        entries = b""
        str_addr = mods_addr + 16 * len(modules)
        for body, name in modules:
            if addr + len(body) > memory_size:
                raise MemoryTooSmall("module does not fit in guest memory")
            blobs.append((addr, body))
            nm = name.encode() + b"\0"
            blobs.append((str_addr, nm))
            entries += struct.pack("<IIII", addr, addr + len(body), str_addr, 0)
            str_addr += len(nm)
            addr = (addr + len(body) + 0xFFF) & ~0xFFF
        if str_addr > loader_name_addr:
            raise KernelFormatError("too many module names for the boot information area")
        blobs.append((mods_addr, entries))
        mods_count = len(modules)
        img.kernel_end = addr

    mbi = struct.pack(
        "<IIIIIII16xII",
        mbi_flags,
        LOW_MEMORY_KB,
        upper_kb,
        0xFFFFFFFF,  # boot_device: none
        cmdline_addr,
        mods_count,
        mods_addr if mods_count else 0,
        len(mmap),
        mmap_addr,
    )
    mbi += struct.pack("<IIIIII", 0, 0, 0, 0, 0, loader_name_addr)
    blobs.append((mbi_addr, mbi))

    # flat GDT: null, null, code32 (0x10), data32 (0x18) as QEMU's multiboot loader uses
    gdt = struct.pack("<QQQQ", 0, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
    blobs.append((base, gdt))
    img.gdt_base = base
    img.regs = {"rax": MULTIBOOT_BOOTLOADER_MAGIC, "rbx": mbi_addr, "rip": img.entry}
    return img, blobs


def protected_mode_sregs(gdt_base: int = GDT_ADDR) -> dict[str, object]:
    """Flat 32-bit segments with paging off, as the multiboot spec requires at entry."""
    code = {
        "base": 0, "limit": 0xFFFFFFFF, "selector": 0x10, "type": 0xB, "present": 1,
        "dpl": 0, "db": 1, "s": 1, "l": 0, "g": 1, "unusable": 0,
    }  # fmt: skip
    data = dict(code, selector=0x18, type=0x3)
    return {
        "cs": code,
        "ds": data,
        "es": data,
        "fs": data,
        "gs": data,
        "ss": data,
        "gdt": {"base": gdt_base, "limit": 31},
        "idt": {"base": 0, "limit": 0},
        "cr0": 0x11,  # PE | ET
        "cr3": 0,
        "cr4": 0,
        "efer": 0,
    }
