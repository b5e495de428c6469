"""Split virtqueues (virtio 1.x section 2.7) read and written through a ``GuestMemory``.

The ring layout lives in guest RAM; the device side keeps only what the spec says a device
remembers (its last seen avail index and its used index) in ``VirtqueueState``, plain data, so
a checkpoint carries it.  Every way the guest can describe something impossible is turned into
a ``VirtqueueError`` (or a ``GuestMemoryError`` from the memory itself): the device model then
marks itself DEVICE_NEEDS_RESET instead of crashing the hypervisor.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = [
    "GuestMemory",
    "GuestMemoryError",
    "VirtqueueError",
    "VirtqueueState",
    "Segment",
    "Chain",
    "Virtqueue",
    "VIRTQ_DESC_F_NEXT",
    "VIRTQ_DESC_F_WRITE",
    "VIRTQ_DESC_F_INDIRECT",
    "VIRTQ_AVAIL_F_NO_INTERRUPT",
]

# Descriptor and ring flags (virtio_ring.h).
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1

_DESC = struct.Struct("<QIHH")  # addr, len, flags, next


class GuestMemoryError(Exception):
    """A guest-physical range that is not (entirely) RAM."""


class GuestMemory(Protocol):
    """Guest RAM as devices see it; the machine's version also marks written pages dirty."""

    def read(self, gpa: int, size: int) -> bytes: ...
    def write(self, gpa: int, data: bytes) -> None: ...


class VirtqueueError(Exception):
    """The driver described a queue or chain the device cannot follow (the guest's fault)."""


@dataclass
class VirtqueueState:
    """One queue's registers (as the transport sets them) and the device's ring positions."""

    size: int = 0  # QueueNum
    ready: bool = False
    desc_addr: int = 0
    driver_addr: int = 0  # the avail ring
    device_addr: int = 0  # the used ring
    last_avail_idx: int = 0  # free-running u16: the next avail entry to take
    used_idx: int = 0  # free-running u16: the next used entry to write


class Segment(NamedTuple):
    """One descriptor of a chain: guest address, length, and whether the device writes it."""

    addr: int
    length: int
    writable: bool


@dataclass(frozen=True, slots=True)
class Chain:
    """A popped descriptor chain; ``head`` is what goes back in the used ring."""

    head: int
    segments: tuple[Segment, ...]

    @property
    def readable(self) -> list[Segment]:
        return [s for s in self.segments if not s.writable]

    @property
    def writable(self) -> list[Segment]:
        return [s for s in self.segments if s.writable]

    @property
    def readable_len(self) -> int:
        return sum(s.length for s in self.segments if not s.writable)

    @property
    def writable_len(self) -> int:
        return sum(s.length for s in self.segments if s.writable)


def validate_layout(state: VirtqueueState, max_size: int) -> str | None:
    """Why this queue cannot be enabled, or None: size and ring alignment (2.7 / 2.7.10)."""
    n = state.size
    if n < 1 or n > max_size or n & (n - 1):
        return f"queue size {n} is not a power of two in 1..{max_size}"
    if state.desc_addr % 16 or state.driver_addr % 2 or state.device_addr % 4:
        return "ring addresses are misaligned"
    return None


class Virtqueue:
    """A view of one split virtqueue: ``memory`` plus the ``state`` it advances.

    Made on demand, never stored, so it always follows the device's current ``state``
    (which a checkpoint restore replaces).
    """

    def __init__(self, memory: GuestMemory, state: VirtqueueState) -> None:
        self.memory = memory
        self.state = state

    def _u16(self, gpa: int) -> int:
        return int.from_bytes(self.memory.read(gpa, 2), "little")

    def avail_flags(self) -> int:
        return self._u16(self.state.driver_addr)

    def avail_idx(self) -> int:
        return self._u16(self.state.driver_addr + 2)

    def pending(self) -> int:
        """How many chains the driver has made available and the device has not taken."""
        s = self.state
        n = (self.avail_idx() - s.last_avail_idx) & 0xFFFF
        if n > s.size:
            raise VirtqueueError(
                f"avail idx ran {n} entries ahead of the device, more than the queue size {s.size}"
            )
        return n

    def _chain_at(self, nth: int) -> Chain:
        """The chain in avail slot ``last_avail_idx + nth``, validated, without taking it."""
        s = self.state
        slot = (s.last_avail_idx + nth) % s.size
        head = self._u16(s.driver_addr + 4 + 2 * slot)
        if head >= s.size:
            raise VirtqueueError(f"avail ring names descriptor {head}, beyond queue size {s.size}")
        segments: list[Segment] = []
        index = head
        seen_writable = False
        while True:
            if len(segments) >= s.size:
                raise VirtqueueError(
                    f"descriptor chain from {head} is longer than the queue size {s.size} (a loop)"
                )
            addr, length, flags, nxt = _DESC.unpack(self.memory.read(s.desc_addr + 16 * index, 16))
            if flags & VIRTQ_DESC_F_INDIRECT:
                raise VirtqueueError(f"descriptor {index} is indirect, which was not negotiated")
            writable = bool(flags & VIRTQ_DESC_F_WRITE)
            if seen_writable and not writable:
                raise VirtqueueError(f"descriptor {index} is readable after a writable one")
            seen_writable = writable
            if addr + length > 1 << 64:
                raise VirtqueueError(f"descriptor {index} wraps around the address space")
            segments.append(Segment(addr, length, writable))
            if not flags & VIRTQ_DESC_F_NEXT:
                return Chain(head, tuple(segments))
            if nxt >= s.size:
                raise VirtqueueError(f"descriptor {index} links to {nxt}, beyond size {s.size}")
            index = nxt

    def peek_all(self) -> list[Chain]:
        """Every available chain, validated, none taken (for "how much room is posted")."""
        return [self._chain_at(i) for i in range(self.pending())]

    def pop(self) -> Chain | None:
        """Take the next available chain, or None when the driver has posted nothing new."""
        if not self.pending():
            return None
        chain = self._chain_at(0)
        self.state.last_avail_idx = (self.state.last_avail_idx + 1) & 0xFFFF
        return chain

    def push(self, chain: Chain, written: int) -> None:
        """Return ``chain`` to the driver, saying ``written`` bytes were stored in it."""
        s = self.state
        slot = s.used_idx % s.size
        self.memory.write(s.device_addr + 4 + 8 * slot, struct.pack("<II", chain.head, written))
        s.used_idx = (s.used_idx + 1) & 0xFFFF
        self.memory.write(s.device_addr + 2, s.used_idx.to_bytes(2, "little"))

    def wants_interrupt(self) -> bool:
        """False while the driver has set VIRTQ_AVAIL_F_NO_INTERRUPT (no EVENT_IDX here)."""
        return not self.avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT

    # -- moving bytes ----------------------------------------------------------------------

    def gather(self, segments: list[Segment]) -> bytes:
        """The concatenated contents of ``segments`` (the device-readable part of a chain)."""
        return b"".join(self.memory.read(seg.addr, seg.length) for seg in segments if seg.length)

    def scatter(self, segments: list[Segment], data: bytes) -> int:
        """Write ``data`` across ``segments`` in order; returns how many bytes fit."""
        done = 0
        for seg in segments:
            if done >= len(data):
                break
            part = data[done : done + seg.length]
            if part:
                self.memory.write(seg.addr, part)
            done += len(part)
        return done
