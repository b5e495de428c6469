"""QEMU's firmware configuration device (fw_cfg) on ports 0x510/0x511, with DMA at 0x514.

Guests written for QEMU learn the machine from it: kvm-unit-tests reads the CPU count
(``FW_CFG_NB_CPUS``), SeaBIOS and Linux's ``qemu_fw_cfg`` driver read the signature, the
feature bits, the file directory and ``etc/e820``.  rrvmm serves the selectors documented
in docs/fw_cfg.md with QEMU's encodings (docs/specs/fw_cfg.rst in QEMU): legacy items are
little-endian, the file directory and the DMA structures are big-endian.

Port layout (offsets the device sees; the machine maps 0x510 length 2 at offset 0 and
0x514 length 8 at offset 4, as QEMU does, so 0x512/0x513 stay unknown ports):
- offset 0-1: a 16-bit write selects an item (and rewinds it); a byte read returns the next
  byte of the selected item, zero past its end or for an unknown selector; byte writes are
  ignored (QEMU dropped guest data writes in 2.4).
- offset 4-11: the DMA address register, big-endian.  A 32-bit write at 4 sets the high
  half, one at 8 the low half and starts the transfer (an 8-byte write at 4, possible on
  MMIO only, does both).  Reads return the signature "QEMU CFG".

A DMA transfer reads its ``FWCfgDmaAccess`` (be32 control, be32 length, be64 address) from
guest memory, copies (or skips) item bytes, and writes the control word back: 0 on
success, the error bit otherwise.  Guest memory is reached through the ``read_memory`` and
``write_memory`` callables; one that raises ``ValueError`` (an address outside RAM) makes
the transfer fail with the error bit, as a DMA to nowhere does in QEMU.  A transfer is a
pure function of guest memory and the device state, so a replay repeats it exactly.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "E820Entry",
    "FW_CFG_PORT",
    "FW_CFG_DMA_PORT",
    "FwCfg",
    "FwCfgState",
    "Selector",
]

log = logging.getLogger("rrvmm")

FW_CFG_PORT = 0x510
FW_CFG_DMA_PORT = 0x514
DMA_OFFSET = 4  # where the DMA register starts in the device's offsets

SIGNATURE = b"QEMU"
DMA_SIGNATURE = b"QEMU CFG"

FEATURE_TRADITIONAL = 1 << 0
FEATURE_DMA = 1 << 1

DMA_CTL_ERROR = 0x01
DMA_CTL_READ = 0x02
DMA_CTL_SKIP = 0x04
DMA_CTL_SELECT = 0x08
DMA_CTL_WRITE = 0x10

WRITE_CHANNEL = 0x4000
ARCH_LOCAL = 0x8000
ENTRY_MASK = 0x3FFF
INVALID = 0xFFFF
FILE_FIRST = 0x20
FILE_SLOTS = 0x20  # QEMU's default: selectors 0x20-0x3f
FILE_NAME_LEN = 56
E820_ENTRY = struct.Struct("<QQI")  # QEMU's packed struct e820_entry

_DMA_CHUNK = 1 << 16  # zero-fill past an item's end in pieces, never one huge buffer


class Selector:
    """Item keys (QEMU include/standard-headers/linux/qemu_fw_cfg.h and hw/i386/fw_cfg.h)."""

    SIGNATURE = 0x00
    ID = 0x01
    UUID = 0x02
    RAM_SIZE = 0x03
    NOGRAPHIC = 0x04
    NB_CPUS = 0x05
    MACHINE_ID = 0x06
    NUMA = 0x0D
    BOOT_MENU = 0x0E
    MAX_CPUS = 0x0F
    CMDLINE_ADDR = 0x13
    CMDLINE_SIZE = 0x14
    CMDLINE_DATA = 0x15
    FILE_DIR = 0x19
    IRQ0_OVERRIDE = ARCH_LOCAL | 2


@dataclass(frozen=True)
class E820Entry:
    address: int
    length: int
    type: int  # 1 RAM, 2 reserved, 3 ACPI, 4 NVS


@dataclass
class FwCfgState:
    """What a guest can change: the selected item, its read offset, the DMA address."""

    selector: int = Selector.SIGNATURE
    offset: int = 0
    dma_addr: int = 0


def _item_index(key: int) -> int | None:
    """The item a selector names (arch bit kept, write-channel bit dropped), or None."""
    if key & ENTRY_MASK >= FILE_FIRST + FILE_SLOTS:
        return None
    return key & (ARCH_LOCAL | ENTRY_MASK)


class FwCfg:
    """The items are fixed at construction (they describe the machine); ``state`` is tiny."""

    def __init__(
        self,
        *,
        ram_size: int,
        e820: Iterable[E820Entry],
        nb_cpus: int = 1,
        max_cpus: int | None = None,
        cmdline: bytes | None = None,
        cmdline_addr: int = 0,
        files: dict[str, bytes] | None = None,
        read_memory: Callable[[int, int], bytes] | None = None,
        write_memory: Callable[[int, bytes], None] | None = None,
    ) -> None:
        max_cpus = nb_cpus if max_cpus is None else max_cpus
        if not 1 <= nb_cpus <= max_cpus <= 0xFFFF:
            raise ValueError(f"fw_cfg: bad CPU counts {nb_cpus}/{max_cpus}")
        self._read_memory = read_memory
        self._write_memory = write_memory
        self.dma = read_memory is not None and write_memory is not None
        all_files = dict(files or {})
        all_files["etc/e820"] = b"".join(E820_ENTRY.pack(e.address, e.length, e.type) for e in e820)
        items: dict[int, bytes] = {
            Selector.SIGNATURE: SIGNATURE,
            Selector.ID: struct.pack("<I", FEATURE_TRADITIONAL | (FEATURE_DMA if self.dma else 0)),
            Selector.UUID: bytes(16),
            Selector.RAM_SIZE: struct.pack("<Q", ram_size),
            Selector.NOGRAPHIC: struct.pack("<H", 1),
            Selector.NB_CPUS: struct.pack("<H", nb_cpus),
            Selector.MACHINE_ID: struct.pack("<I", 0),
            # No NUMA nodes: a node count of 0, then one (unused) node number per CPU slot.
            Selector.NUMA: bytes(8 * (1 + max_cpus)),
            Selector.BOOT_MENU: struct.pack("<H", 0),
            Selector.MAX_CPUS: struct.pack("<H", max_cpus),
            Selector.IRQ0_OVERRIDE: struct.pack("<I", 1),
        }
        if cmdline is not None:
            data = cmdline + b"\0"
            items[Selector.CMDLINE_ADDR] = struct.pack("<I", cmdline_addr)
            items[Selector.CMDLINE_SIZE] = struct.pack("<I", len(data))
            items[Selector.CMDLINE_DATA] = data
        names = sorted(all_files)  # QEMU keeps the directory sorted by name
        if len(names) > FILE_SLOTS:
            raise ValueError(f"fw_cfg: {len(names)} files, at most {FILE_SLOTS}")
        directory = [struct.pack(">I", len(names))]
        for i, name in enumerate(names):
            raw = name.encode()
            if not raw or len(raw) >= FILE_NAME_LEN:
                raise ValueError(f"fw_cfg: file name {name!r} empty or over 55 bytes")
            items[FILE_FIRST + i] = all_files[name]
            directory.append(struct.pack(">IHH56s", len(all_files[name]), FILE_FIRST + i, 0, raw))
        items[Selector.FILE_DIR] = b"".join(directory)
        self.items = items
        self.file_selectors = {name: FILE_FIRST + i for i, name in enumerate(names)}
        self._logged: set[str] = set()
        self.state = FwCfgState()

    def reset(self) -> None:
        self.state = FwCfgState()

    # -- the item cursor -------------------------------------------------------------------

    def _select(self, key: int) -> None:
        self.state.selector = key & 0xFFFF if _item_index(key) is not None else INVALID
        self.state.offset = 0

    def _item(self) -> bytes | None:
        s = self.state
        if s.selector == INVALID:
            return None
        index = _item_index(s.selector)
        return None if index is None else self.items.get(index)

    def _read_byte(self) -> int:
        data = self._item()
        s = self.state
        if data is None or s.offset >= len(data):
            return 0
        s.offset += 1
        return data[s.offset - 1]

    # -- ports -----------------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        if offset >= DMA_OFFSET:
            start = offset - DMA_OFFSET
            return int.from_bytes(DMA_SIGNATURE[start : start + size].ljust(size, b"\0"), "little")
        if size != 1:
            self._log_once(
                "rsize", f"fw_cfg: {size}-byte read at {FW_CFG_PORT + offset:#x} reads 0"
            )
            return 0
        return self._read_byte()

    def pio_write(self, offset: int, size: int, value: int) -> None:
        if offset >= DMA_OFFSET:
            self._write_dma(offset - DMA_OFFSET, size, value)
        elif size == 2:
            self._select(value)
        elif size != 1:
            self._log_once("wsize", f"fw_cfg: {size}-byte write at {FW_CFG_PORT + offset:#x}")
        # A byte write is a legacy data write: ignored, as QEMU does since 2.4.

    def mmio_read(self, offset: int, size: int) -> int:
        return self.pio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.pio_write(offset, size, value)

    # -- DMA -------------------------------------------------------------------------------

    def _write_dma(self, offset: int, size: int, value: int) -> None:
        be = int.from_bytes((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), "big")
        s = self.state
        if size == 4 and offset == 0:
            s.dma_addr = be << 32
        elif size == 4 and offset == 4:
            s.dma_addr |= be
            self._transfer()
        elif size == 8 and offset == 0:
            s.dma_addr = be
            self._transfer()
        else:
            self._log_once("dma", f"fw_cfg: DMA register write of {size} at +{offset} ignored")

    def _transfer(self) -> None:
        s = self.state
        addr = s.dma_addr
        s.dma_addr = 0
        if not self.dma or self._read_memory is None or self._write_memory is None:
            self._log_once("nodma", "fw_cfg: DMA transfer without guest memory access")
            return
        try:
            raw = self._read_memory(addr, 16)
            if len(raw) != 16:
                raise ValueError("short read")
        except ValueError:
            self._put_control(addr, DMA_CTL_ERROR)
            return
        control, length, address = struct.unpack(">IIQ", raw)
        if control & DMA_CTL_SELECT:
            self._select(control >> 16)
        self._put_control(addr, self._copy(control, length, address))

    def _copy(self, control: int, length: int, address: int) -> int:
        """Move ``length`` bytes as ``control`` asks; the control word to write back."""
        if control & DMA_CTL_READ:
            op = "read"
        elif control & DMA_CTL_WRITE:
            op = "write"
        elif control & DMA_CTL_SKIP:
            op = "skip"
        else:
            return 0
        s = self.state
        data = self._item()
        assert self._write_memory is not None
        try:
            while length:
                if data is None or s.offset >= len(data):
                    if op == "write":
                        return DMA_CTL_ERROR
                    n = min(length, _DMA_CHUNK)
                    if op == "read":
                        self._write_memory(address, bytes(n))
                else:
                    n = min(length, len(data) - s.offset)
                    if op == "write":
                        return DMA_CTL_ERROR  # no item is writable here
                    if op == "read":
                        self._write_memory(address, data[s.offset : s.offset + n])
                    s.offset += n
                address += n
                length -= n
        except ValueError:
            return DMA_CTL_ERROR
        return 0

    def _put_control(self, addr: int, control: int) -> None:
        assert self._write_memory is not None
        try:
            self._write_memory(addr, struct.pack(">I", control))
        except ValueError:
            self._log_once("ctl", f"fw_cfg: DMA control write-back to {addr:#x} failed")

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)
