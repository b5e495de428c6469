"""The virtio-mmio register file: identification, negotiation, queues, interrupts."""

from __future__ import annotations

import pytest
from driver import (
    CONFIG_GENERATION,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    INTERRUPT_ACK,
    INTERRUPT_STATUS,
    MAGIC_VALUE,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_SEL,
    STATUS,
    VENDOR_ID,
    VERSION,
    Driver,
)

from rrvmm.devices.virtio import VIRTIO_F_VERSION_1, VirtioMmio, VirtioRng
from rrvmm.devices.virtio.device import VIRTIO_CONFIG_S_NEEDS_RESET, VirtioDevice


def rng_driver() -> Driver:
    return Driver(VirtioRng(lambda n: bytes(n)))


def test_identification_registers() -> None:
    d = rng_driver()
    assert d.r(MAGIC_VALUE) == 0x74726976
    assert d.r(VERSION) == 2
    assert d.r(DEVICE_ID) == 4
    assert d.r(VENDOR_ID) == 0x4D565252
    assert d.r(STATUS) == 0
    assert d.r(CONFIG_GENERATION) == 0


def test_port_io_floats_and_odd_widths_are_ignored() -> None:
    d = rng_driver()
    assert d.dev.pio_read(0, 2) == 0xFFFF
    d.dev.pio_write(0, 4, 0)
    assert d.dev.mmio_read(MAGIC_VALUE, 2) == 0  # registers are 32-bit only
    d.dev.mmio_write(STATUS, 1, 1)
    assert d.r(STATUS) == 0


def test_features_offer_version_1_in_the_high_word() -> None:
    d = rng_driver()
    d.w(DEVICE_FEATURES_SEL, 1)
    assert d.r(DEVICE_FEATURES) == 1  # bit 32
    d.w(DEVICE_FEATURES_SEL, 2)
    assert d.r(DEVICE_FEATURES) == 0
    assert d.device_features() == VIRTIO_F_VERSION_1


def test_features_ok_sticks_with_version_1() -> None:
    d = rng_driver()
    assert d.negotiate()
    assert d.device.state.driver_features == VIRTIO_F_VERSION_1


@pytest.mark.parametrize("accept", [0, VIRTIO_F_VERSION_1 | 1 << 28, 1 << 5])
def test_features_ok_refused_without_version_1_or_with_unoffered_bits(accept: int) -> None:
    d = rng_driver()
    assert not d.negotiate(accept)


def test_queue_registers() -> None:
    d = rng_driver()
    d.w(QUEUE_SEL, 0)
    assert d.r(QUEUE_NUM_MAX) == VirtioRng.queue_max_size
    d.w(QUEUE_SEL, 1)  # no such queue: Linux sees 0 and stops
    assert d.r(QUEUE_NUM_MAX) == 0
    assert d.r(QUEUE_READY) == 0


def test_queue_ready_reads_back_and_reset_clears_it() -> None:
    d = rng_driver()
    d.start()
    d.w(QUEUE_SEL, 0)
    assert d.r(QUEUE_READY) == 1
    d.w(STATUS, 0)
    assert d.r(QUEUE_READY) == 0
    assert d.r(STATUS) == 0


def test_bad_queue_size_fails_the_device() -> None:
    d = rng_driver()
    assert d.negotiate()
    d.w(QUEUE_SEL, 0)
    d.w(QUEUE_NUM, 3)
    d.w(QUEUE_READY, 1)
    assert d.r(QUEUE_READY) == 0
    assert d.r(STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET


def test_interrupt_line_follows_interrupt_status_and_ack() -> None:
    d = rng_driver()
    (q,) = d.start()
    assert not d.wire.level
    q.post(d.buffer(8, writable=True))
    q.post(d.buffer(8, writable=True))
    q.kick()
    assert d.r(INTERRUPT_STATUS) == 1 and d.wire.level
    d.device.raise_interrupt(2)
    d.w(INTERRUPT_ACK, 1)
    assert d.r(INTERRUPT_STATUS) == 2 and d.wire.level
    d.w(INTERRUPT_ACK, 2)
    assert d.r(INTERRUPT_STATUS) == 0 and not d.wire.level
    assert d.wire.levels == [True, False]  # level-triggered: one rise, one fall


def test_no_interrupt_while_the_driver_suppresses_it() -> None:
    d = rng_driver()
    (q,) = d.start()
    q.suppress_interrupts(True)
    q.post(d.buffer(4, writable=True))
    q.kick()
    assert len(q.used()) == 1
    assert d.r(INTERRUPT_STATUS) == 0


def test_kick_before_driver_ok_is_served_at_driver_ok() -> None:
    d = rng_driver()
    assert d.negotiate()
    q = d.setup_queue(0)
    q.post(d.buffer(4, writable=True))
    q.kick()
    assert q.used() == []
    d.driver_ok()
    assert q.used() == [(0, 4)]


class _Configured(VirtioDevice):
    device_id = 9

    def config(self) -> bytes:
        return bytes(range(1, 9))


def test_config_space_any_width_and_all_ones_beyond() -> None:
    d = Driver(_Configured())
    assert d.config(0, 1) == 0x01
    assert d.config(2, 2) == 0x0403
    assert d.config(4, 4) == 0x08070605
    assert d.config(0, 8) == 0x0807060504030201
    assert d.config(7, 2) == 0xFFFF


def test_transport_state_is_the_device_state() -> None:
    dev = VirtioRng(lambda n: bytes(n))
    d = Driver(dev)
    assert isinstance(d.dev, VirtioMmio)
    assert d.dev.state is dev.state
