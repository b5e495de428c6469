"""The Linux x86 boot protocol for bzImages, entered through the 64-bit entry point.

Reference: the kernel's Documentation/arch/x86/boot.rst ("64-bit boot protocol") and
zero-page.rst. The 16-bit real-mode setup code is never run: rrvmm plays the part of the boot
loader *and* of the setup code, fills ``struct boot_params`` (the "zero page") itself and
enters ``startup_64`` of the compressed kernel in long mode.

Guest physical memory at entry (everything below 1 MiB is RAM in the e820 table, so Linux
reuses these pages once it has copied boot_params and the command line):

    0x07000-0x07fff  boot_params (zero page); RSI points here. RSP = 0x7000 (stack below it)
    0x08000-0x0802f  GDT: 0x10 __BOOT_CS (64-bit code), 0x18 __BOOT_DS (flat data),
                     0x20 a 64-bit busy TSS (base 0; VMX wants TR usable in long mode)
    0x09000-0x09fff  PML4 (CR3)
    0x0a000-0x0afff  PDPT: four entries, 0-4 GiB
    0x0b000-0x0efff  four page directories of 2 MiB pages: identity map of 0-4 GiB
    0x20000-...      kernel command line (at most cmdline_size bytes + NUL, < 64 KiB)
    load address     the protected-mode kernel (the file after the setup sectors):
                     pref_address (0x1000000 on x86-64) for a relocatable kernel, 0x100000
                     (code32_start's classic address) otherwise; RIP = load address + 0x200
    runtime..+init_size  what the decompressor needs (runtime = max(load address aligned to
                     kernel_alignment, pref_address): 6.1's startup_64 never decompresses
                     below LOAD_PHYSICAL_ADDR)
    top of low RAM   the initrd, page aligned, below min(initrd_addr_max + 1, RAM below the
                     0xC0000000 hole); it must stay above the kernel's init_size region

The multiboot layout (0x8000-0xa000) is never used by a Linux boot, so the two overlap
harmlessly. The decompressor in 6.1 drops to 32-bit mode through a trampoline it places
just below 0x9f000 (saving and restoring what was there) and later builds its own page
tables, so nothing above survives the first milliseconds of the boot.

e820: RAM 0-640 KiB, reserved 640 KiB-1 MiB, RAM 1 MiB up to the end of memory or the
0xC0000000 hole, and the rest of RAM from 4 GiB (as ``kvm/memslots.py`` maps it).
"""

from __future__ import annotations

import struct

from rrvmm.machine.boot.multiboot import BootImage, KernelFormatError, MemoryTooSmall

__all__ = [
    "BOOT_PARAMS_ADDR",
    "CMDLINE_ADDR",
    "GDT_ADDR",
    "PML4_ADDR",
    "BzImageHeader",
    "e820_map",
    "is_bzimage",
    "load_bzimage",
    "long_mode_sregs",
]

BOOT_PARAMS_ADDR = 0x7000
GDT_ADDR = 0x8000
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000  # four pages, 0xb000-0xefff
CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 0x10000  # bytes including the NUL
STACK_TOP = BOOT_PARAMS_ADDR
IDENTITY_MAP_GIB = 4

LOW_RAM_END = 0xA0000  # 640 KiB
HIGH_RAM_START = 0x100000  # 1 MiB
PCI_HOLE = 0xC000_0000  # RAM above this moves to 4 GiB (kvm/memslots.py)
HIGH_BASE = 0x1_0000_0000
PAGE = 0x1000

E820_RAM = 1
E820_RESERVED = 2

# setup_header (offsets in the file and in boot_params, which holds a copy at 0x1f1)
HDR_START = 0x1F1
OFF_SETUP_SECTS = 0x1F1
OFF_BOOT_FLAG = 0x1FE
OFF_JUMP = 0x200
OFF_HEADER = 0x202
OFF_VERSION = 0x206
OFF_TYPE_OF_LOADER = 0x210
OFF_LOADFLAGS = 0x211
OFF_CODE32_START = 0x214
OFF_RAMDISK_IMAGE = 0x218
OFF_RAMDISK_SIZE = 0x21C
OFF_HEAP_END_PTR = 0x224
OFF_CMD_LINE_PTR = 0x228
OFF_INITRD_ADDR_MAX = 0x22C
OFF_KERNEL_ALIGNMENT = 0x230
OFF_RELOCATABLE = 0x234
OFF_XLOADFLAGS = 0x236
OFF_CMDLINE_SIZE = 0x238
OFF_PREF_ADDRESS = 0x258
OFF_INIT_SIZE = 0x260
# boot_params outside the header
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_ALT_MEM_K = 0x1E0
BP_E820_ENTRIES = 0x1E8
BP_SENTINEL = 0x1EF
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128

HDRS_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
MIN_VERSION = 0x020C  # 2.12: xloadflags, the first protocol that announces a 64-bit entry
LOADED_HIGH = 0x01
CAN_USE_HEAP = 0x80
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
TYPE_OF_LOADER_UNDEFINED = 0xFF
STARTUP_64_OFFSET = 0x200
CLASSIC_LOAD_ADDR = 0x100000

BOOT_CS = 0x10
BOOT_DS = 0x18
BOOT_TSS = 0x20
# GDT: null, null, 64-bit code (L=1, D=0), flat 4G data, 64-bit busy TSS (16 bytes)
_GDT = struct.pack("<QQQQQQ", 0, 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00008B0000000067, 0)

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_PS = 1 << 7


def is_bzimage(data: bytes) -> bool:
    """True when the file carries a Linux setup header ("HdrS" at 0x202)."""
    return len(data) >= OFF_VERSION + 2 and data[OFF_HEADER : OFF_HEADER + 4] == HDRS_MAGIC


class BzImageHeader:
    """The setup header fields a 64-bit boot uses, read from the file and checked."""

    def __init__(self, data: bytes) -> None:
        if not is_bzimage(data):
            raise KernelFormatError("not a Linux bzImage (no 'HdrS' setup header at 0x202)")
        self.version = _u16(data, OFF_VERSION)
        major, minor = self.version >> 8, self.version & 0xFF
        self.version_str = f"{major}.{minor:02d}"
        if self.version < MIN_VERSION:
            raise KernelFormatError(
                f"bzImage boot protocol {self.version_str} is too old: the 64-bit entry needs"
                " 2.12 or later (Linux 3.8+)"
            )
        if _u16(data, OFF_BOOT_FLAG) != BOOT_FLAG:
            raise KernelFormatError("bzImage setup header without the 0xAA55 boot flag")
        self.header_end = OFF_HEADER + data[OFF_JUMP + 1]  # jump's offset byte ends the header
        if self.header_end < OFF_INIT_SIZE + 4 or self.header_end > len(data):
            raise KernelFormatError(f"bzImage setup header ends at {self.header_end:#x}: cut short")
        self.setup_sects = data[OFF_SETUP_SECTS] or 4
        self.setup_size = (self.setup_sects + 1) * 512
        if len(data) <= self.setup_size + STARTUP_64_OFFSET:
            raise KernelFormatError(
                f"bzImage is {len(data)} bytes, no kernel after {self.setup_sects} setup sectors"
            )
        self.loadflags = data[OFF_LOADFLAGS]
        self.xloadflags = _u16(data, OFF_XLOADFLAGS)
        if not self.xloadflags & XLF_KERNEL_64:
            raise KernelFormatError(
                "bzImage has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64):"
                " rrvmm boots 64-bit Linux kernels only"
            )
        if not self.loadflags & LOADED_HIGH:
            raise KernelFormatError("zImage (loaded low) kernels are not supported, only bzImage")
        self.code32_start = _u32(data, OFF_CODE32_START)
        self.initrd_addr_max = _u32(data, OFF_INITRD_ADDR_MAX)
        self.kernel_alignment = _u32(data, OFF_KERNEL_ALIGNMENT)
        self.relocatable = bool(data[OFF_RELOCATABLE])
        self.cmdline_size = _u32(data, OFF_CMDLINE_SIZE)
        self.pref_address = struct.unpack_from("<Q", data, OFF_PREF_ADDRESS)[0]
        self.init_size = _u32(data, OFF_INIT_SIZE)
        align = self.kernel_alignment
        if self.relocatable and (align == 0 or align & (align - 1)):
            raise KernelFormatError(f"bzImage kernel_alignment {align:#x} is not a power of two")
        if self.pref_address < HIGH_RAM_START:
            raise KernelFormatError(f"bzImage pref_address {self.pref_address:#x} is below 1 MiB")
        if self.init_size == 0:
            raise KernelFormatError("bzImage init_size is 0")
        self.kernel = data[self.setup_size :]
        if self.relocatable:
            self.load_addr = _align_up(self.pref_address, align)
            self.runtime_start = self.load_addr
        else:
            self.load_addr = CLASSIC_LOAD_ADDR
            self.runtime_start = self.pref_address  # LOAD_PHYSICAL_ADDR; the kernel moves itself
        # first byte above what the kernel may touch before it reads the e820 table
        self.kernel_top = max(
            self.runtime_start + self.init_size, self.load_addr + len(self.kernel)
        )


def e820_map(memory_size: int) -> list[tuple[int, int, int]]:
    """(address, size, type): low RAM, the legacy hole, RAM to the PCI hole, RAM above 4 GiB."""
    low_top = min(memory_size, PCI_HOLE)
    out = [
        (0, LOW_RAM_END, E820_RAM),
        (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, E820_RESERVED),
        (HIGH_RAM_START, low_top - HIGH_RAM_START, E820_RAM),
    ]
    if memory_size > PCI_HOLE:
        out.append((HIGH_BASE, memory_size - PCI_HOLE, E820_RAM))
    return out


def identity_page_tables(gib: int = IDENTITY_MAP_GIB) -> list[tuple[int, bytes]]:
    """PML4, PDPT and ``gib`` page directories of 2 MiB pages mapping 0..gib GiB 1:1."""
    pml4 = struct.pack("<Q", PDPT_ADDR | PTE_P | PTE_RW).ljust(PAGE, b"\0")
    pdpt = b"".join(
        struct.pack("<Q", (PD_ADDR + i * PAGE) | PTE_P | PTE_RW) for i in range(gib)
    ).ljust(PAGE, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | PTE_P | PTE_RW | PTE_PS) for i in range(512 * gib))
    return [(PML4_ADDR, pml4), (PDPT_ADDR, pdpt), (PD_ADDR, pds)]


def load_bzimage(
    data: bytes, memory_size: int, cmdline: str = "", initrd: bytes | None = None
) -> tuple[BootImage, list[tuple[int, bytes]]]:
    """Lay out a bzImage for the 64-bit entry; returns the image and the blobs to write."""
    hdr = BzImageHeader(data)
    low_top = min(memory_size, PCI_HOLE)
    mib = 1 << 20
    if hdr.kernel_top > low_top:
        raise MemoryTooSmall(
            f"the kernel needs RAM up to {hdr.kernel_top:#x} ({_mib(hdr.kernel_top)} MiB:"
            f" loaded at {hdr.load_addr:#x}, init_size {_mib(hdr.init_size)} MiB),"
            f" the guest has {_mib(memory_size)} MiB"
        )

    cmd = cmdline.encode()
    limit = min(hdr.cmdline_size, CMDLINE_MAX - 1)
    if len(cmd) > limit:
        raise KernelFormatError(
            f"kernel command line is {len(cmd)} bytes, this kernel takes at most {limit}"
        )
    if b"\0" in cmd:
        raise KernelFormatError("kernel command line contains a NUL byte")

    zp = bytearray(PAGE)
    zp[HDR_START : hdr.header_end] = data[HDR_START : hdr.header_end]
    zp[OFF_TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED
    # The 16-bit setup code (the heap's only user) does not run: no CAN_USE_HEAP.
    zp[OFF_LOADFLAGS] = hdr.loadflags & ~CAN_USE_HEAP
    struct.pack_into("<H", zp, OFF_HEAP_END_PTR, 0)
    struct.pack_into("<I", zp, OFF_CMD_LINE_PTR, CMDLINE_ADDR)
    struct.pack_into("<I", zp, BP_EXT_CMD_LINE_PTR, 0)
    struct.pack_into("<I", zp, OFF_CODE32_START, hdr.load_addr)
    zp[BP_SENTINEL] = 0
    struct.pack_into("<I", zp, BP_ALT_MEM_K, (low_top - HIGH_RAM_START) >> 10)
    e820 = e820_map(memory_size)
    zp[BP_E820_ENTRIES] = len(e820)
    for i, (addr, size, kind) in enumerate(e820):
        struct.pack_into("<QQI", zp, BP_E820_TABLE + 20 * i, addr, size, kind)

    img = BootImage(
        segments=[(hdr.load_addr, hdr.kernel)],
        entry=hdr.load_addr + STARTUP_64_OFFSET,
        mode="long64",
        page_table=PML4_ADDR,
        kernel_end=hdr.kernel_top,
        cmdline_addr=CMDLINE_ADDR,
        format=f"Linux bzImage (boot protocol {hdr.version_str}, 64-bit entry)",
    )
    blobs: list[tuple[int, bytes]] = []
    if initrd:
        size = len(initrd)
        ceiling = hdr.initrd_addr_max + 1
        room = ceiling - _align_up(hdr.kernel_top, PAGE)
        if size > 0xFFFF_FFFF or size > room:
            raise KernelFormatError(
                f"initrd is {_mib(size)} MiB, too large: this kernel takes an initrd below"
                f" {ceiling:#x} and above its own {_mib(hdr.kernel_top)} MiB"
                f" ({max(room, 0) // mib} MiB)"
            )
        addr = (min(ceiling, low_top) - size) & ~(PAGE - 1)
        if addr < hdr.kernel_top:
            need = _align_up(hdr.kernel_top, PAGE) + _align_up(size, PAGE)
            raise MemoryTooSmall(
                f"the kernel (RAM up to {_mib(hdr.kernel_top)} MiB) and the initrd"
                f" ({_mib(size)} MiB) need {_mib(need)} MiB, the guest has"
                f" {_mib(memory_size)} MiB"
            )
        struct.pack_into("<II", zp, OFF_RAMDISK_IMAGE, addr, size)
        struct.pack_into("<II", zp, BP_EXT_RAMDISK_IMAGE, 0, 0)
        blobs.append((addr, bytes(initrd)))
        img.kernel_end = max(img.kernel_end, addr + size)

    blobs.append((BOOT_PARAMS_ADDR, bytes(zp)))
    blobs.append((CMDLINE_ADDR, cmd + b"\0"))
    blobs.append((GDT_ADDR, _GDT))
    blobs.extend(identity_page_tables())
    img.regs = {
        "rsi": BOOT_PARAMS_ADDR,
        "rip": img.entry,
        "rsp": STACK_TOP,
        "rflags": 0x2,  # IF clear
    }
    return img, blobs


def long_mode_sregs(pml4: int = PML4_ADDR) -> dict[str, object]:
    """64-bit mode as the boot protocol wants it: paging on, CS = __BOOT_CS, DS/ES/SS = __BOOT_DS.

    Interrupts stay off (RFLAGS.IF = 0 in the registers), and the IDT is empty until the
    kernel loads its own: any exception before that is a triple fault.
    """
    code = {
        "base": 0, "limit": 0xFFFFFFFF, "selector": BOOT_CS, "type": 0xB, "present": 1,
        "dpl": 0, "db": 0, "s": 1, "l": 1, "g": 1, "unusable": 0,
    }  # fmt: skip
    data = dict(code, selector=BOOT_DS, type=0x3, db=1, l=0)
    tss = dict(code, selector=BOOT_TSS, limit=0x67, type=0xB, s=0, l=0, g=0)
    return {
        "cs": code,
        "ds": data,
        "es": data,
        "fs": data,
        "gs": data,
        "ss": data,
        "tr": tss,
        "gdt": {"base": GDT_ADDR, "limit": len(_GDT) - 1},
        "idt": {"base": 0, "limit": 0},
        "cr0": 0x8000_0031,  # PG | NE | ET | PE
        "cr3": pml4,
        "cr4": 0x20,  # PAE
        "efer": 0x500,  # LME | LMA
    }


def _u16(data: bytes, off: int) -> int:
    return struct.unpack_from("<H", data, off)[0]


def _u32(data: bytes, off: int) -> int:
    return struct.unpack_from("<I", data, off)[0]


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}".removesuffix(".0")
