"""The machine's virtio-mmio devices: where they sit, how guests find them, what feeds them.

Four fixed windows (the same in every machine, so a trace never has to say where):
block 0xfeb00000 IRQ 10, network 0xfeb00200 IRQ 11, console 0xfeb00400 IRQ 5, entropy
0xfeb00600 IRQ 14. A Linux guest finds them in the ACPI DSDT (``LNRO0005``); a multiboot
guest on its command line, in Linux's ``virtio_mmio.device=512@0xfeb00000:10`` syntax.

Everything a device hands the guest from outside comes from the seam between exits
(console bytes, network frames) or while the guest waits on a queue (entropy), so the
recorder logs it; disk contents are not inputs (the image is fixed by its sha256, and
writes go to an overlay that checkpoints carry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rrvmm.devices.bus import Bus, IrqLine
from rrvmm.devices.virtio import (
    MMIO_SIZE,
    Disk,
    DiskError,
    GuestMemoryError,
    VirtioBlk,
    VirtioConsole,
    VirtioMmio,
    VirtioNet,
    VirtioRng,
)
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.machine.acpi import VirtioMmioSlot

if TYPE_CHECKING:
    from rrvmm.cpu.backend import RecordableCpu

__all__ = ["VirtioSet", "SLOTS", "VirtioHosts", "open_disk"]

MAX_CONSOLE_INPUT = 1 << 20  # bytes of host input handed to the virtio console per exit

log = logging.getLogger("rrvmm")

# name -> (MMIO base, IRQ)
SLOTS: dict[str, tuple[int, int]] = {
    "blk": (0xFEB0_0000, 10),
    "net": (0xFEB0_0200, 11),
    "console": (0xFEB0_0400, 5),
    "rng": (0xFEB0_0600, 14),
}


@dataclass
class VirtioHosts:
    """Host ends: where transmitted frames and console output go (None: dropped)."""

    disk: Disk | None = None
    net_out: Callable[[bytes], None] | None = None
    console_out: Callable[[bytes], None] | None = None


def open_disk(path: str, mode: str) -> Disk:
    """The block device's host end (``mode`` OVERLAY or WRITE_THROUGH); a disk image that
    cannot be opened is a one-line RrvmmError, for run, record and replay alike."""
    try:
        return Disk(path, mode)
    except (DiskError, ValueError) as e:
        raise RrvmmError(str(e), ExitStatus.NO_INPUT) from None


class _Memory:
    """Guest RAM for device DMA: writes are marked dirty like guest stores, so landings
    and checkpoints see what a device wrote."""

    def __init__(self, cpu: RecordableCpu) -> None:
        self._cpu = cpu

    def read(self, gpa: int, size: int) -> bytes:
        try:
            return self._cpu.read_memory(gpa, size)
        except Exception as e:  # noqa: BLE001 - the backend says "not RAM" its own way
            raise GuestMemoryError(f"{gpa:#x}+{size:#x} is not guest RAM") from e

    def write(self, gpa: int, data: bytes) -> None:
        try:
            self._cpu.write_memory(gpa, data)
        except Exception as e:  # noqa: BLE001
            raise GuestMemoryError(f"{gpa:#x}+{len(data):#x} is not guest RAM") from e
        off = self._cpu.slots.host_offset(gpa, len(data))
        if off is not None:
            self._cpu.slots.mark_dirty(off, len(data))


class VirtioSet:
    """Builds the devices, maps them on ``mmio``, and feeds them from the seam."""

    def __init__(
        self,
        cpu: RecordableCpu,
        mmio: Bus,
        irq: Callable[[int, bool], None],
        hosts: VirtioHosts,
        entropy: Callable[[int], bytes],
    ) -> None:
        mem = _Memory(cpu)
        self.blk = VirtioBlk(hosts.disk) if hosts.disk is not None else None
        self.net = VirtioNet(hosts.net_out or (lambda _f: None))
        self.console = VirtioConsole(hosts.console_out or (lambda _b: None))
        self.rng = VirtioRng(entropy)
        self.transports: dict[str, VirtioMmio] = {}
        for name, dev in (
            ("blk", self.blk), ("net", self.net), ("console", self.console), ("rng", self.rng)
        ):  # fmt: skip
            if dev is None:
                continue
            base, line = SLOTS[name]
            t = VirtioMmio(dev, mem, IrqLine(line, irq))
            mmio.insert(t, base, MMIO_SIZE)
            self.transports[name] = t

    def acpi_slots(self) -> list[VirtioMmioSlot]:
        return [VirtioMmioSlot(SLOTS[n][0], MMIO_SIZE, SLOTS[n][1]) for n in self.transports]

    def cmdline_words(self) -> str:
        """The devices in ``virtio_mmio.device=`` syntax (multiboot guests; Linux kernels
        built with VIRTIO_MMIO_CMDLINE_DEVICES)."""
        return " ".join(
            f"virtio_mmio.device={MMIO_SIZE}@{SLOTS[n][0]:#x}:{SLOTS[n][1]}"
            for n in self.transports
        )

    def devices(self) -> dict[str, Any]:
        return {f"virtio_{n}": t for n, t in self.transports.items()}

    def take_inputs(self, index: int, seam: Any) -> None:
        """Between exits: console bytes and network frames the guest has room for."""
        # a guest may post GiBs of receive buffers; one input event stays well inside the
        # trace's 2 MiB event limit (the rest comes at the next exit)
        room = min(self.console.rx_room(), MAX_CONSOLE_INPUT)
        if room:
            data = seam.device_input(index, "console", room)
            if data:
                self.console.receive(data)
        while self.net.rx_ready():
            frame = seam.device_input(index, "net", 0)
            if not frame:
                break
            self.net.receive(frame)
