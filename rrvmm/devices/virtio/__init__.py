"""virtio devices on the virtio-mmio transport (version 2, virtio 1.x split virtqueues).

``VirtioMmio(device, memory, irq)`` is the bus-facing Device; the devices take only their
host-side wiring: ``VirtioBlk(disk)``, ``VirtioNet(on_transmit)``, ``VirtioConsole(on_output)``,
``VirtioRng(entropy)``.  Input from outside (entropy, console bytes, frames) is always handed
to a device by the machine, which gets it from the recorded seam; devices never read the host.
"""

from __future__ import annotations

from rrvmm.devices.virtio.blk import BlkState, VirtioBlk
from rrvmm.devices.virtio.console import VirtioConsole
from rrvmm.devices.virtio.device import VIRTIO_F_VERSION_1, VirtioDevice, VirtioState
from rrvmm.devices.virtio.disk import OVERLAY, WRITE_THROUGH, Disk, DiskError, DiskState
from rrvmm.devices.virtio.mmio import MMIO_SIZE, VirtioMmio
from rrvmm.devices.virtio.net import VirtioNet
from rrvmm.devices.virtio.queue import (
    GuestMemory,
    GuestMemoryError,
    Virtqueue,
    VirtqueueError,
    VirtqueueState,
)
from rrvmm.devices.virtio.rng import VirtioRng

__all__ = [
    "BlkState",
    "Disk",
    "DiskError",
    "DiskState",
    "GuestMemory",
    "GuestMemoryError",
    "MMIO_SIZE",
    "OVERLAY",
    "VIRTIO_F_VERSION_1",
    "VirtioBlk",
    "VirtioConsole",
    "VirtioDevice",
    "VirtioMmio",
    "VirtioNet",
    "VirtioRng",
    "VirtioState",
    "Virtqueue",
    "VirtqueueError",
    "VirtqueueState",
    "WRITE_THROUGH",
]
