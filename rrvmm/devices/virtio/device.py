"""The transport-independent half of a virtio device: status, features, queues, interrupts.

A concrete device (blk, net, console, rng) says what it is (``device_id``, ``features``,
``config``) and what a kick on a queue means (``process``).  This base class owns the rest of
the virtio core: feature negotiation, the status byte, the interrupt status word and its
level-triggered line, and the failure path.  The MMIO transport is only a register decoder on
top of it, so all guest-visible state sits in one ``state`` dataclass a checkpoint can copy.

Failure: whatever the guest describes that cannot be followed (a looping chain, an address
outside RAM, a readable buffer where a writable one is due, ...) raises inside ``process``; the
base class catches it, sets DEVICE_NEEDS_RESET, raises a configuration-change interrupt, logs
one warning, and ignores the device's queues until the driver writes 0 to Status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.virtio.queue import (
    GuestMemory,
    GuestMemoryError,
    Virtqueue,
    VirtqueueError,
    VirtqueueState,
    validate_layout,
)

__all__ = [
    "VirtioDevice",
    "VirtioState",
    "VIRTIO_F_VERSION_1",
    "VIRTIO_CONFIG_S_ACKNOWLEDGE",
    "VIRTIO_CONFIG_S_DRIVER",
    "VIRTIO_CONFIG_S_DRIVER_OK",
    "VIRTIO_CONFIG_S_FEATURES_OK",
    "VIRTIO_CONFIG_S_NEEDS_RESET",
    "VIRTIO_CONFIG_S_FAILED",
    "VIRTIO_INT_VRING",
    "VIRTIO_INT_CONFIG",
]

log = logging.getLogger("rrvmm")

VIRTIO_F_VERSION_1 = 1 << 32

# Device status bits (virtio_config.h).
VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01
VIRTIO_CONFIG_S_DRIVER = 0x02
VIRTIO_CONFIG_S_DRIVER_OK = 0x04
VIRTIO_CONFIG_S_FEATURES_OK = 0x08
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80

# InterruptStatus bits (virtio_mmio.h).
VIRTIO_INT_VRING = 0x1
VIRTIO_INT_CONFIG = 0x2


@dataclass
class VirtioState:
    """Everything a virtio device remembers; devices subclass it to add their own fields."""

    status: int = 0
    device_features_sel: int = 0
    driver_features_sel: int = 0
    driver_features: int = 0
    queue_sel: int = 0
    interrupt_status: int = 0
    config_generation: int = 0
    irq_level: bool = False  # the level last driven onto the line
    queues: list[VirtqueueState] = field(default_factory=list)


S = TypeVar("S", bound=VirtioState)


class VirtioDevice:
    """Base class of the virtio devices; ``VirtioMmio`` binds it to memory and an IRQ line."""

    device_id: ClassVar[int] = 0
    name: ClassVar[str] = "virtio"
    num_queues: ClassVar[int] = 1
    queue_max_size: ClassVar[int] = 256

    state: Any  # a VirtioState subclass; devices narrow it

    def __init__(self) -> None:
        self._memory: GuestMemory | None = None
        self._irq: IrqLine | None = None
        self.state = self.initial_state()

    # -- what a concrete device provides ---------------------------------------------------

    def initial_state(self) -> VirtioState:
        """Power-on state; also what a reset returns to (devices may carry fields over)."""
        return self._fresh(VirtioState)

    def _fresh(self, cls: Callable[..., S], **extra: Any) -> S:
        queues = [VirtqueueState(size=self.queue_max_size) for _ in range(self.num_queues)]
        return cls(queues=queues, **extra)

    def features(self) -> int:
        """Feature bits offered; VERSION_1 is added by the base class."""
        return 0

    def config(self) -> bytes:
        """The device-specific configuration space, as the guest reads it from offset 0."""
        return b""

    def config_write(self, offset: int, data: bytes) -> None:
        """A driver write into configuration space; read-only by default."""
        return None

    def process(self, queue: int) -> None:
        """Handle a kick on ``queue``; may raise VirtqueueError / GuestMemoryError."""
        return None

    # -- wiring ----------------------------------------------------------------------------

    def bind(self, memory: GuestMemory, irq: IrqLine) -> None:
        """Called once by the transport."""
        self._memory = memory
        self._irq = irq

    def queue(self, index: int) -> Virtqueue:
        assert self._memory is not None, f"{self.name} is not bound to a transport"
        return Virtqueue(self._memory, self.state.queues[index])

    # -- core semantics the transport calls ------------------------------------------------

    def device_features(self) -> int:
        return self.features() | VIRTIO_F_VERSION_1

    def negotiated(self, bit: int) -> bool:
        return bool(self.state.driver_features & bit)

    @property
    def failed(self) -> bool:
        return bool(self.state.status & VIRTIO_CONFIG_S_NEEDS_RESET)

    def live(self) -> bool:
        """DRIVER_OK and not failed: the only time the device touches its queues."""
        status = self.state.status
        return bool(status & VIRTIO_CONFIG_S_DRIVER_OK) and not status & (
            VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED
        )

    def queue_live(self, index: int) -> bool:
        return self.live() and 0 <= index < self.num_queues and self.state.queues[index].ready

    def reset(self) -> None:
        """Driver wrote 0 to Status: back to the initial state, line low."""
        level = self.state.irq_level
        self.state = self.initial_state()
        self.state.irq_level = level
        self.update_irq()

    def write_status(self, value: int) -> None:
        s = self.state
        if value == 0:
            self.reset()
            return
        value &= 0xFF
        if value & VIRTIO_CONFIG_S_FEATURES_OK and not s.status & VIRTIO_CONFIG_S_FEATURES_OK:
            accepted = s.driver_features & ~self.device_features() == 0
            if not accepted or not s.driver_features & VIRTIO_F_VERSION_1:
                value &= ~VIRTIO_CONFIG_S_FEATURES_OK  # the driver reads it back and gives up
        was_ok = s.status & VIRTIO_CONFIG_S_DRIVER_OK
        s.status = value | (s.status & VIRTIO_CONFIG_S_NEEDS_RESET)
        if s.status & VIRTIO_CONFIG_S_DRIVER_OK and not was_ok:
            for i in range(self.num_queues):  # kicks that came before DRIVER_OK
                self.notify(i)

    def write_driver_features(self, value: int) -> None:
        s = self.state
        if s.status & VIRTIO_CONFIG_S_FEATURES_OK or s.driver_features_sel > 1:
            return
        shift = 32 * s.driver_features_sel
        s.driver_features = (s.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)

    def set_queue_ready(self, index: int, ready: bool) -> None:
        q = self.state.queues[index]
        if not ready:
            q.ready = False
            return
        if q.ready:
            return
        problem = validate_layout(q, self.queue_max_size)
        if problem is not None:
            self.fail(index, problem)
            return
        q.ready = True
        q.last_avail_idx = 0
        q.used_idx = 0

    def notify(self, index: int) -> None:
        """The driver kicked ``index`` (QueueNotify): process it now, synchronously."""
        if self.queue_live(index):
            self.guarded(index, self.process)

    def guarded(self, index: int, work: Callable[[int], Any]) -> Any:
        """Run ``work(index)``; a guest mistake inside fails the device. Returns None then."""
        try:
            return work(index)
        except (VirtqueueError, GuestMemoryError) as exc:
            self.fail(index, str(exc) or type(exc).__name__)
            return None

    def fail(self, index: int, why: str) -> None:
        """Enter DEVICE_NEEDS_RESET: one warning, a config interrupt, queues ignored."""
        if self.failed:
            return
        log.warning("%s: queue %d: %s; device needs reset", self.name, index, why)
        self.state.status |= VIRTIO_CONFIG_S_NEEDS_RESET
        self.state.config_generation = (self.state.config_generation + 1) & 0xFFFFFFFF
        self.raise_interrupt(VIRTIO_INT_CONFIG)

    def drain_transmit(self, index: int, min_len: int = 0) -> list[bytes]:
        """Complete every posted driver-to-device chain of queue ``index``; their bytes.

        A chain with a device-writable part, or shorter than ``min_len``, is malformed.
        """
        q = self.queue(index)
        out = []
        while (chain := q.pop()) is not None:
            if chain.writable:
                raise VirtqueueError("transmit buffer has a device-writable descriptor")
            if chain.readable_len < min_len:
                raise VirtqueueError(f"transmit buffer of {chain.readable_len} bytes is short")
            out.append(q.gather(chain.readable))
            q.push(chain, 0)
        if out:
            self.used_added(index)
        return out

    def used_added(self, index: int) -> None:
        """After pushing used entries on ``index``: interrupt unless the driver suppressed it."""
        if self.queue(index).wants_interrupt():
            self.raise_interrupt(VIRTIO_INT_VRING)

    # -- interrupts ------------------------------------------------------------------------

    def raise_interrupt(self, bits: int) -> None:
        self.state.interrupt_status |= bits
        self.update_irq()

    def ack_interrupt(self, bits: int) -> None:
        self.state.interrupt_status &= ~bits
        self.update_irq()

    def update_irq(self) -> None:
        """Level-triggered: the line is high exactly while InterruptStatus is non-zero."""
        level = self.state.interrupt_status != 0
        if level != self.state.irq_level:
            self.state.irq_level = level
            if self._irq is not None:
                self._irq.set(level)
