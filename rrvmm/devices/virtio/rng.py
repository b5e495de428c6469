"""virtio-rng (device id 4, virtio 1.x section 5.4): entropy from the recorded seam.

The device never reads a host random source: ``entropy(n)`` is the machine's, which draws
from the host while recording and from the trace while replaying.  Each posted buffer of
total writable length n receives ``entropy(n)``; requests are capped at ``MAX_REQUEST``
bytes (the spec lets the device fill less than offered) so a guest cannot make the host
allocate gigabytes.  Linux asks for at most a cache line at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from rrvmm.devices.virtio.device import VirtioDevice
from rrvmm.devices.virtio.queue import VirtqueueError

__all__ = ["VirtioRng", "MAX_REQUEST"]

VIRTIO_ID_RNG = 4
MAX_REQUEST = 1 << 16


class VirtioRng(VirtioDevice):
    """One request queue; ``entropy(n)`` must return n bytes."""

    device_id = VIRTIO_ID_RNG
    name = "virtio-rng"
    num_queues = 1
    queue_max_size = 64

    def __init__(self, entropy: Callable[[int], bytes]) -> None:
        self.entropy = entropy
        super().__init__()

    def process(self, queue: int) -> None:
        q = self.queue(queue)
        completed = False
        while (chain := q.pop()) is not None:
            if chain.readable:
                raise VirtqueueError("entropy request has a device-readable descriptor")
            n = min(chain.writable_len, MAX_REQUEST)
            written = q.scatter(chain.writable, self.entropy(n)[:n]) if n else 0
            q.push(chain, written)
            completed = True
        if completed:
            self.used_added(queue)
