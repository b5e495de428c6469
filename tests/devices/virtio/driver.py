"""The guest side of virtio-mmio for tests: RAM in a bytearray and a driver that does what
Linux's virtio_mmio and virtio core do, in the same order, so device tests read like a boot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.virtio.device import (
    VIRTIO_CONFIG_S_ACKNOWLEDGE,
    VIRTIO_CONFIG_S_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VirtioDevice,
)
from rrvmm.devices.virtio.mmio import VirtioMmio
from rrvmm.devices.virtio.queue import GuestMemoryError

# Register offsets, spelled as in linux/virtio_mmio.h.
MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

F_NEXT = 1
F_WRITE = 2
F_INDIRECT = 4


class Ram:
    """A GuestMemory over a bytearray starting at guest-physical 0."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.buf = bytearray(size)

    def _check(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > len(self.buf):
            raise GuestMemoryError(f"{size} bytes at {gpa:#x} are outside RAM")

    def read(self, gpa: int, size: int) -> bytes:
        self._check(gpa, size)
        return bytes(self.buf[gpa : gpa + size])

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        self.buf[gpa : gpa + len(data)] = data


@dataclass
class IrqWire:
    """An IrqLine sink remembering the current level and every change."""

    levels: list[bool] = field(default_factory=list)

    def __call__(self, line: int, level: bool) -> None:
        self.levels.append(level)

    @property
    def level(self) -> bool:
        return bool(self.levels) and self.levels[-1]


Buffer = tuple[int, int, bool]  # (gpa, length, device-writable)


class DriverQueue:
    """One split virtqueue as the driver lays it out and uses it."""

    def __init__(self, driver: Driver, index: int, size: int) -> None:
        self.driver = driver
        self.index = index
        self.size = size
        self.desc = driver.alloc(16 * size, 16)
        self.avail = driver.alloc(6 + 2 * size, 2)
        self.used_ring = driver.alloc(6 + 8 * size, 4)
        self.next_desc = 0
        self.avail_idx = 0
        self.last_used = 0

    def write_desc(self, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.driver.ram.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, head: int, bump: int = 1) -> None:
        """Put ``head`` in the next avail slot and advance avail.idx by ``bump``."""
        ram = self.driver.ram
        ram.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + bump) & 0xFFFF
        ram.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def post(self, *bufs: Buffer) -> int:
        """Chain ``bufs`` into descriptors and make the chain available; returns the head."""
        ids = [(self.next_desc + i) % self.size for i in range(len(bufs))]
        self.next_desc = (self.next_desc + len(bufs)) % self.size
        for n, (addr, length, writable) in enumerate(bufs):
            last = n == len(bufs) - 1
            flags = (F_WRITE if writable else 0) | (0 if last else F_NEXT)
            self.write_desc(ids[n], addr, length, flags, 0 if last else ids[n + 1])
        self.publish(ids[0])
        return ids[0]

    def kick(self) -> None:
        self.driver.w(QUEUE_NOTIFY, self.index)

    def suppress_interrupts(self, on: bool) -> None:
        self.driver.ram.write(self.avail, struct.pack("<H", 1 if on else 0))

    def used(self) -> list[tuple[int, int]]:
        """Used elements (id, len) the device returned since the last call."""
        ram = self.driver.ram
        idx = struct.unpack("<H", ram.read(self.used_ring + 2, 2))[0]
        out = []
        while self.last_used != idx:
            slot = self.last_used % self.size
            out.append(struct.unpack("<II", ram.read(self.used_ring + 4 + 8 * slot, 8)))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out


class Driver:
    """A virtio-mmio driver for one device in ``ram``."""

    def __init__(self, device: VirtioDevice, ram: Ram | None = None, line: int = 10) -> None:
        self.ram = ram or Ram()
        self.wire = IrqWire()
        self.irq = IrqLine(line, self.wire)
        self.dev = VirtioMmio(device, self.ram, self.irq)
        self.device = device
        self._next = 0x1000
        self.queues: list[DriverQueue] = []

    # -- registers ------------------------------------------------------------------------

    def r(self, offset: int) -> int:
        return self.dev.mmio_read(offset, 4)

    def w(self, offset: int, value: int) -> None:
        self.dev.mmio_write(offset, 4, value)

    def config(self, offset: int, size: int) -> int:
        return self.dev.mmio_read(CONFIG + offset, size)

    def alloc(self, size: int, align: int = 16) -> int:
        addr = (self._next + align - 1) & ~(align - 1)
        self._next = addr + size
        assert self._next <= len(self.ram.buf), "test RAM exhausted"
        return addr

    def buffer(self, data: bytes | int, writable: bool = False) -> Buffer:
        """A new buffer holding ``data`` (or ``data`` zero bytes)."""
        payload = bytes(data)
        addr = self.alloc(max(len(payload), 1), 8)
        self.ram.write(addr, payload)
        return (addr, len(payload), writable)

    def read(self, buf: Buffer, length: int | None = None) -> bytes:
        return self.ram.read(buf[0], buf[1] if length is None else length)

    # -- the Linux sequence ---------------------------------------------------------------

    def device_features(self) -> int:
        self.w(DEVICE_FEATURES_SEL, 1)
        high = self.r(DEVICE_FEATURES)
        self.w(DEVICE_FEATURES_SEL, 0)
        return high << 32 | self.r(DEVICE_FEATURES)

    def negotiate(self, accept: int | None = None) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; True if FEATURES_OK stuck."""
        assert self.r(MAGIC_VALUE) == 0x74726976 and self.r(VERSION) == 2
        self.w(STATUS, 0)
        self.w(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE)
        self.w(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER)
        offered = self.device_features()
        chosen = offered if accept is None else accept
        self.w(DRIVER_FEATURES_SEL, 1)
        self.w(DRIVER_FEATURES, chosen >> 32)
        self.w(DRIVER_FEATURES_SEL, 0)
        self.w(DRIVER_FEATURES, chosen & 0xFFFFFFFF)
        self.w(STATUS, self.r(STATUS) | VIRTIO_CONFIG_S_FEATURES_OK)
        return bool(self.r(STATUS) & VIRTIO_CONFIG_S_FEATURES_OK)

    def setup_queue(self, index: int, size: int | None = None) -> DriverQueue:
        self.w(QUEUE_SEL, index)
        assert self.r(QUEUE_READY) == 0
        num_max = self.r(QUEUE_NUM_MAX)
        assert num_max, f"queue {index} does not exist"
        q = DriverQueue(self, index, size or min(num_max, 16))
        self.w(QUEUE_NUM, q.size)
        for low, addr in (
            (QUEUE_DESC_LOW, q.desc),
            (QUEUE_DRIVER_LOW, q.avail),
            (QUEUE_DEVICE_LOW, q.used_ring),
        ):
            self.w(low, addr & 0xFFFFFFFF)
            self.w(low + 4, addr >> 32)
        self.w(QUEUE_READY, 1)
        return q

    def driver_ok(self) -> None:
        self.w(STATUS, self.r(STATUS) | VIRTIO_CONFIG_S_DRIVER_OK)

    def start(self, size: int | None = None) -> list[DriverQueue]:
        """The whole probe: negotiate everything offered, all queues, DRIVER_OK."""
        assert self.negotiate()
        self.queues = [self.setup_queue(i, size) for i in range(self.device.num_queues)]
        self.driver_ok()
        return self.queues

    def interrupt(self) -> int:
        """What vm_interrupt does: read InterruptStatus and acknowledge exactly that."""
        pending = self.r(INTERRUPT_STATUS)
        if pending:
            self.w(INTERRUPT_ACK, pending)
        return pending
