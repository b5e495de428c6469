"""virtio-blk (device id 2, virtio 1.x section 5.2) over a ``Disk``.

Requests are parsed as byte streams, not by descriptor boundaries (VERSION_1 implies any
layout): the readable part is the 16-byte header plus, for writes, the data; the writable part
is the data for reads (or the id) followed by one status byte.  A request the disk cannot
serve (out-of-range sector, partial sector, write to a read-only disk, host I/O error) is the
guest's ordinary error and completes with VIRTIO_BLK_S_IOERR; a chain without a header or a
status byte is malformed and fails the device.

A device reset keeps the overlay: it is the disk's content, not device state.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from rrvmm.devices.virtio.device import VirtioDevice, VirtioState
from rrvmm.devices.virtio.disk import SECTOR_SIZE, Disk, DiskState
from rrvmm.devices.virtio.queue import Chain, Segment, Virtqueue, VirtqueueError

__all__ = ["VirtioBlk", "BlkState"]

log = logging.getLogger("rrvmm")

VIRTIO_ID_BLOCK = 2

VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_FLUSH = 1 << 9

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

VIRTIO_BLK_ID_BYTES = 20
_HEADER = struct.Struct("<IIQ")  # struct virtio_blk_outhdr: type, ioprio, sector
_CHUNK = 1 << 20  # disk-to-guest copies go in pieces so a huge descriptor cannot balloon memory
_CONFIG_SIZE = 64


@dataclass
class BlkState(VirtioState):
    disk: DiskState = field(default_factory=DiskState)


class _IoError(Exception):
    """The request fails with VIRTIO_BLK_S_IOERR."""


class VirtioBlk(VirtioDevice):
    """A single-queue block device; ``serial`` is what VIRTIO_BLK_T_GET_ID returns."""

    device_id = VIRTIO_ID_BLOCK
    name = "virtio-blk"
    num_queues = 1
    queue_max_size = 256

    def __init__(self, disk: Disk, serial: str = "rrvmm-disk") -> None:
        self.disk = disk
        self.serial = serial.encode("ascii")[:VIRTIO_BLK_ID_BYTES]
        super().__init__()

    @property
    def state(self) -> BlkState:
        return self._state

    @state.setter
    def state(self, value: BlkState) -> None:
        self._state = value
        self.disk.state = value.disk  # a restored checkpoint brings its own overlay

    def initial_state(self) -> BlkState:
        return self._fresh(BlkState, disk=self.disk.state)

    def features(self) -> int:
        bits = VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX
        if self.disk.read_only:
            bits |= VIRTIO_BLK_F_RO
        return bits

    def config(self) -> bytes:
        """struct virtio_blk_config: capacity, size_max (0), seg_max, geometry (0), blk_size."""
        head = struct.pack("<QII4xI", self.disk.sectors, 0, self.queue_max_size - 2, SECTOR_SIZE)
        return head.ljust(_CONFIG_SIZE, b"\0")

    def process(self, queue: int) -> None:
        q = self.queue(queue)
        completed = False
        while (chain := q.pop()) is not None:
            self._request(q, chain)
            q.push(chain, chain.writable_len)
            completed = True
        if completed:
            self.used_added(queue)

    def _request(self, q: Virtqueue, chain: Chain) -> None:
        if chain.readable_len < _HEADER.size:
            raise VirtqueueError(f"request header is {chain.readable_len} bytes, not 16")
        data_segs, status_addr = _split_status(chain.writable)
        readable = q.gather(chain.readable)
        kind, _ioprio, sector = _HEADER.unpack_from(readable)
        in_len = chain.writable_len - 1
        try:
            status = self._serve(q, kind, sector, readable[_HEADER.size :], data_segs, in_len)
        except _IoError as e:
            log.debug("%s: request type %d sector %d: %s", self.name, kind, sector, e)
            status = VIRTIO_BLK_S_IOERR
        q.memory.write(status_addr, bytes([status]))

    def _serve(
        self, q: Virtqueue, kind: int, sector: int, out: bytes, data: list[Segment], in_len: int
    ) -> int:
        if kind == VIRTIO_BLK_T_IN:
            self._check_range(sector, in_len)
            self._read_into(q, data, sector)
        elif kind == VIRTIO_BLK_T_OUT:
            if self.disk.read_only:
                raise _IoError("write to a read-only disk")
            self._check_range(sector, len(out))
            self._disk_op(lambda: self.disk.write(sector, out))
        elif kind == VIRTIO_BLK_T_FLUSH:
            self._disk_op(self.disk.flush)
        elif kind == VIRTIO_BLK_T_GET_ID:
            q.scatter(data, self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")[:in_len])
        else:
            return VIRTIO_BLK_S_UNSUPP
        return VIRTIO_BLK_S_OK

    def _check_range(self, sector: int, length: int) -> None:
        if length % SECTOR_SIZE:
            raise _IoError(f"{length} bytes is not a whole number of sectors")
        if sector + length // SECTOR_SIZE > self.disk.sectors:
            raise _IoError(f"beyond the last sector {self.disk.sectors - 1}")

    def _disk_op(self, op: Callable[[], None]) -> None:
        try:
            op()
        except (OSError, ValueError) as e:
            raise _IoError(str(e)) from e

    def _read_into(self, q: Virtqueue, segs: list[Segment], sector: int) -> None:
        """Stream sectors from ``sector`` into ``segs``, whatever their sizes."""
        pos = sector * SECTOR_SIZE
        for seg in segs:
            done = 0
            while done < seg.length:
                n = min(seg.length - done, _CHUNK)
                first = pos // SECTOR_SIZE
                last = (pos + n + SECTOR_SIZE - 1) // SECTOR_SIZE
                try:
                    blob = self.disk.read(first, last - first)
                except OSError as e:
                    raise _IoError(str(e)) from e
                skip = pos - first * SECTOR_SIZE
                q.memory.write(seg.addr + done, blob[skip : skip + n])
                done += n
                pos += n


def _split_status(writable: list[Segment]) -> tuple[list[Segment], int]:
    """The data segments and the address of the status byte (the last writable byte)."""
    segs = [s for s in writable if s.length]
    if not segs:
        raise VirtqueueError("request has no writable status byte")
    last = segs[-1]
    data = segs[:-1]
    if last.length > 1:
        data.append(Segment(last.addr, last.length - 1, True))
    return data, last.addr + last.length - 1
