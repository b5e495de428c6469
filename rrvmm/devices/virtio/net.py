"""virtio-net (device id 1, virtio 1.x section 5.1): one rx/tx pair, no offloads.

Frames cross the device without the 12-byte ``virtio_net_hdr_v1`` (VERSION_1 makes it 12
bytes and always present): transmit strips it before ``on_transmit``, ``receive`` prepends
a zeroed one with num_buffers = 1.  Without MRG_RXBUF a frame must fit one posted buffer;
one that does not is dropped (the buffer stays posted) as QEMU does, and ``receive`` still
reports it consumed so the caller does not offer it forever.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from rrvmm.devices.virtio.device import VirtioDevice
from rrvmm.devices.virtio.queue import VirtqueueError

__all__ = ["VirtioNet", "RXQ", "TXQ", "NET_HDR_SIZE", "DEFAULT_MAC"]

log = logging.getLogger("rrvmm")

VIRTIO_ID_NET = 1
VIRTIO_NET_F_MAC = 1 << 5
VIRTIO_NET_F_STATUS = 1 << 16
VIRTIO_NET_S_LINK_UP = 1

RXQ = 0
TXQ = 1
NET_HDR_SIZE = 12
DEFAULT_MAC = bytes.fromhex("525400123456")
_RX_HDR = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)  # ..., num_buffers = 1


class VirtioNet(VirtioDevice):
    """A NIC whose wire is the machine: ``on_transmit`` out, ``receive`` in."""

    device_id = VIRTIO_ID_NET
    name = "virtio-net"
    num_queues = 2
    queue_max_size = 256

    def __init__(self, on_transmit: Callable[[bytes], None], mac: bytes = DEFAULT_MAC) -> None:
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self.on_transmit = on_transmit
        self.mac = bytes(mac)
        super().__init__()

    def features(self) -> int:
        return VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS

    def config(self) -> bytes:
        """struct virtio_net_config: mac, status."""
        return self.mac + struct.pack("<H", VIRTIO_NET_S_LINK_UP)

    # -- host side -------------------------------------------------------------------------

    def rx_ready(self) -> bool:
        """Whether a receive buffer is posted (``receive`` would not return False)."""
        if not self.queue_live(RXQ):
            return False
        return bool(self.guarded(RXQ, lambda queue: self.queue(queue).pending()))

    def receive(self, frame: bytes) -> bool:
        """Deliver one Ethernet frame; False (frame not taken) if no buffer is posted."""
        if not self.queue_live(RXQ):
            return False
        return bool(self.guarded(RXQ, lambda queue: self._receive(queue, frame)))

    def _receive(self, queue: int, frame: bytes) -> bool:
        q = self.queue(queue)
        saved = q.state.last_avail_idx
        chain = q.pop()
        if chain is None:
            return False
        if chain.readable:
            raise VirtqueueError("receive buffer has a device-readable descriptor")
        packet = _RX_HDR + frame
        if len(packet) > chain.writable_len:
            q.state.last_avail_idx = saved  # leave the buffer for a frame that fits
            log.debug(
                "%s: dropped a %d-byte frame, buffer is %d bytes",
                self.name,
                len(frame),
                chain.writable_len,
            )
            return True
        q.push(chain, q.scatter(chain.writable, packet))
        self.used_added(queue)
        return True

    # -- guest side ------------------------------------------------------------------------

    def process(self, queue: int) -> None:
        if queue != TXQ:
            return  # new receive buffers: the machine sees them through rx_ready
        for packet in self.drain_transmit(queue, NET_HDR_SIZE):
            self.on_transmit(packet[NET_HDR_SIZE:])
