"""virtio-mmio transport, version 2 (virtio 1.x section 4.2.2): a register decoder.

The registers map one-to-one onto the ``VirtioDevice`` core, which holds all state, so the
transport's ``state`` is the device's.  Registers below 0x100 are 32 bits wide and must be
accessed as such (4.2.2.2); other accesses read 0 and are ignored, as QEMU does.
Configuration space from 0x100 takes any width; beyond the device's config it reads all ones.
"""

from __future__ import annotations

import logging
from typing import Any

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.isa import all_ones
from rrvmm.devices.virtio.device import VirtioDevice
from rrvmm.devices.virtio.queue import GuestMemory

__all__ = ["VirtioMmio", "MMIO_SIZE", "MAGIC_VALUE", "MMIO_VERSION", "VENDOR_ID"]

log = logging.getLogger("rrvmm")

MAGIC_VALUE = 0x74726976  # "virt"
MMIO_VERSION = 2
VENDOR_ID = 0x4D565252  # "RRVM"
MMIO_SIZE = 0x200

# Register offsets (linux/virtio_mmio.h).
VIRTIO_MMIO_MAGIC_VALUE = 0x000
VIRTIO_MMIO_VERSION = 0x004
VIRTIO_MMIO_DEVICE_ID = 0x008
VIRTIO_MMIO_VENDOR_ID = 0x00C
VIRTIO_MMIO_DEVICE_FEATURES = 0x010
VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
VIRTIO_MMIO_DRIVER_FEATURES = 0x020
VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
VIRTIO_MMIO_QUEUE_SEL = 0x030
VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
VIRTIO_MMIO_QUEUE_NUM = 0x038
VIRTIO_MMIO_QUEUE_READY = 0x044
VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
VIRTIO_MMIO_INTERRUPT_ACK = 0x064
VIRTIO_MMIO_STATUS = 0x070
VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090
VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094
VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0A0
VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0A4
VIRTIO_MMIO_SHM_SEL = 0x0AC
VIRTIO_MMIO_SHM_LEN_LOW = 0x0B0
VIRTIO_MMIO_SHM_LEN_HIGH = 0x0B4
VIRTIO_MMIO_SHM_BASE_LOW = 0x0B8
VIRTIO_MMIO_SHM_BASE_HIGH = 0x0BC
VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
VIRTIO_MMIO_CONFIG = 0x100

_ADDR_REGS = {
    VIRTIO_MMIO_QUEUE_DESC_LOW: ("desc_addr", 0),
    VIRTIO_MMIO_QUEUE_DESC_HIGH: ("desc_addr", 32),
    VIRTIO_MMIO_QUEUE_DRIVER_LOW: ("driver_addr", 0),
    VIRTIO_MMIO_QUEUE_DRIVER_HIGH: ("driver_addr", 32),
    VIRTIO_MMIO_QUEUE_DEVICE_LOW: ("device_addr", 0),
    VIRTIO_MMIO_QUEUE_DEVICE_HIGH: ("device_addr", 32),
}
# No shared memory regions: a length of all ones means "this region does not exist".
_SHM_REGS = (
    VIRTIO_MMIO_SHM_LEN_LOW,
    VIRTIO_MMIO_SHM_LEN_HIGH,
    VIRTIO_MMIO_SHM_BASE_LOW,
    VIRTIO_MMIO_SHM_BASE_HIGH,
)


class VirtioMmio:
    """One virtio-mmio window (0x200 bytes) in front of ``device``."""

    def __init__(self, device: VirtioDevice, memory: GuestMemory, irq: IrqLine) -> None:
        self.device = device
        device.bind(memory, irq)

    @property
    def state(self) -> Any:
        """The device's state: registers and device data checkpoint together."""
        return self.device.state

    @state.setter
    def state(self, value: Any) -> None:
        self.device.state = value

    # -- Device protocol -------------------------------------------------------------------

    def pio_read(self, offset: int, size: int) -> int:
        return all_ones(size)

    def pio_write(self, offset: int, size: int, value: int) -> None:
        return None

    def mmio_read(self, offset: int, size: int) -> int:
        if offset >= VIRTIO_MMIO_CONFIG:
            return self._config_read(offset - VIRTIO_MMIO_CONFIG, size)
        if size != 4 or offset % 4:
            log.debug("%s: %d-byte read at %#x ignored", self.device.name, size, offset)
            return 0
        return self._read_reg(offset) & 0xFFFFFFFF

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset >= VIRTIO_MMIO_CONFIG:
            data = (value & all_ones(size)).to_bytes(size, "little")
            self.device.config_write(offset - VIRTIO_MMIO_CONFIG, data)
            return
        if size != 4 or offset % 4:
            log.debug("%s: %d-byte write at %#x ignored", self.device.name, size, offset)
            return
        self._write_reg(offset, value & 0xFFFFFFFF)

    # -- registers -------------------------------------------------------------------------

    def _config_read(self, offset: int, size: int) -> int:
        config = self.device.config()
        if offset + size > len(config):
            return all_ones(size)
        return int.from_bytes(config[offset : offset + size], "little")

    def _read_reg(self, offset: int) -> int:
        dev = self.device
        s = dev.state
        if offset == VIRTIO_MMIO_MAGIC_VALUE:
            return MAGIC_VALUE
        if offset == VIRTIO_MMIO_VERSION:
            return MMIO_VERSION
        if offset == VIRTIO_MMIO_DEVICE_ID:
            return dev.device_id
        if offset == VIRTIO_MMIO_VENDOR_ID:
            return VENDOR_ID
        if offset == VIRTIO_MMIO_DEVICE_FEATURES:
            sel = s.device_features_sel
            return dev.device_features() >> (32 * sel) if sel < 2 else 0
        if offset == VIRTIO_MMIO_QUEUE_NUM_MAX:
            return dev.queue_max_size if s.queue_sel < dev.num_queues else 0
        if offset == VIRTIO_MMIO_QUEUE_READY:
            return int(s.queue_sel < dev.num_queues and s.queues[s.queue_sel].ready)
        if offset == VIRTIO_MMIO_INTERRUPT_STATUS:
            return s.interrupt_status
        if offset == VIRTIO_MMIO_STATUS:
            return s.status
        if offset == VIRTIO_MMIO_CONFIG_GENERATION:
            return s.config_generation
        if offset in _SHM_REGS:
            return 0xFFFFFFFF
        return 0  # write-only or reserved

    def _write_reg(self, offset: int, value: int) -> None:
        dev = self.device
        s = dev.state
        if offset == VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            s.device_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            s.driver_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES:
            dev.write_driver_features(value)
        elif offset == VIRTIO_MMIO_QUEUE_SEL:
            s.queue_sel = value
        elif offset == VIRTIO_MMIO_QUEUE_NOTIFY:
            dev.notify(value & 0xFFFF)
        elif offset == VIRTIO_MMIO_INTERRUPT_ACK:
            dev.ack_interrupt(value)
        elif offset == VIRTIO_MMIO_STATUS:
            dev.write_status(value)
        elif offset == VIRTIO_MMIO_SHM_SEL:
            pass
        elif offset in (VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY) or offset in _ADDR_REGS:
            self._write_queue_reg(offset, value)
        else:
            log.debug("%s: write %#x to read-only/reserved %#x", dev.name, value, offset)

    def _write_queue_reg(self, offset: int, value: int) -> None:
        dev = self.device
        sel = dev.state.queue_sel
        if sel >= dev.num_queues:
            return
        if offset == VIRTIO_MMIO_QUEUE_READY:
            dev.set_queue_ready(sel, bool(value & 1))
            return
        q = dev.state.queues[sel]
        if q.ready:  # 4.2.2.3: not while the queue is live; ignoring keeps the rings coherent
            return
        if offset == VIRTIO_MMIO_QUEUE_NUM:
            q.size = value
            return
        name, shift = _ADDR_REGS[offset]
        old = getattr(q, name)
        setattr(q, name, (old & ~(0xFFFFFFFF << shift)) | (value << shift))
