"""virtio-console (device id 3, virtio 1.x section 5.3), single port, no features.

Queue 0 (receiveq) carries host input to the guest, queue 1 (transmitq) guest output to
``on_output``.  Input is never read here: the machine offers bytes from its recorded seam
with ``receive``, which takes only what fits in the buffers the guest has posted and returns
the count, so the rest stays with the caller (as with the UART's ``receive``).
"""

from __future__ import annotations

from collections.abc import Callable

from rrvmm.devices.virtio.device import VirtioDevice
from rrvmm.devices.virtio.queue import Chain, VirtqueueError

__all__ = ["VirtioConsole", "RECEIVEQ", "TRANSMITQ"]

VIRTIO_ID_CONSOLE = 3
RECEIVEQ = 0
TRANSMITQ = 1
_CONFIG_SIZE = 12  # cols, rows, max_nr_ports, emerg_wr: meaningless without their features


def _writable_only(chain: Chain) -> None:
    if chain.readable:
        raise VirtqueueError("receive buffer has a device-readable descriptor")


class VirtioConsole(VirtioDevice):
    """hvc0 for a Linux guest; ``on_output`` gets each transmitted buffer's bytes."""

    device_id = VIRTIO_ID_CONSOLE
    name = "virtio-console"
    num_queues = 2
    queue_max_size = 128

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self.on_output = on_output
        super().__init__()

    def config(self) -> bytes:
        return bytes(_CONFIG_SIZE)

    # -- host side -------------------------------------------------------------------------

    def rx_room(self) -> int:
        """Bytes ``receive`` would take now: the writable space of all posted buffers."""
        if not self.queue_live(RECEIVEQ):
            return 0
        return self.guarded(RECEIVEQ, self._room) or 0

    def _room(self, queue: int) -> int:
        room = 0
        for chain in self.queue(queue).peek_all():
            _writable_only(chain)
            room += chain.writable_len
        return room

    def receive(self, data: bytes) -> int:
        """Place leading bytes of ``data`` in posted buffers; returns how many were taken."""
        if not data or not self.queue_live(RECEIVEQ):
            return 0
        return self.guarded(RECEIVEQ, lambda queue: self._receive(queue, data)) or 0

    def _receive(self, queue: int, data: bytes) -> int:
        q = self.queue(queue)
        taken = 0
        while taken < len(data) and (chain := q.pop()) is not None:
            _writable_only(chain)
            n = q.scatter(chain.writable, data[taken : taken + chain.writable_len])
            q.push(chain, n)
            taken += n
        if taken:
            self.used_added(queue)
        return taken

    # -- guest side ------------------------------------------------------------------------

    def process(self, queue: int) -> None:
        if queue != TRANSMITQ:
            return  # new receive buffers: the machine sees them through rx_room
        for data in self.drain_transmit(queue):
            if data:
                self.on_output(data)
