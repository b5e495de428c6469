"""A guest that describes impossible queues fails the device (NEEDS_RESET + config
interrupt + one warning) without an exception reaching the hypervisor, until it resets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from driver import F_INDIRECT, F_NEXT, F_WRITE, INTERRUPT_STATUS, STATUS, DriverQueue
from rigs import KINDS, Rig, disk_image, good_request, make_rig

from rrvmm.devices.state import snapshot
from rrvmm.devices.virtio import VirtioConsole, VirtioNet

NEEDS_RESET = 0x40
OUTSIDE = 0x7FFF_0000  # beyond the 1 MiB of test RAM


def _direction(rig: Rig) -> int:
    return F_WRITE if rig.kind == "rng" else 0


def loop(rig: Rig, q: DriverQueue) -> None:
    buf = rig.driver.buffer(16)
    q.write_desc(0, buf[0], 16, F_NEXT | _direction(rig), 1)
    q.write_desc(1, buf[0], 16, F_NEXT | _direction(rig), 0)
    q.publish(0)


def next_out_of_range(rig: Rig, q: DriverQueue) -> None:
    buf = rig.driver.buffer(16)
    q.write_desc(0, buf[0], 16, F_NEXT | _direction(rig), q.size + 3)
    q.publish(0)


def head_out_of_range(rig: Rig, q: DriverQueue) -> None:
    q.publish(q.size)


def outside_memory(rig: Rig, q: DriverQueue) -> None:
    q.write_desc(0, OUTSIDE, 64, _direction(rig), 0)
    q.publish(0)


def indirect(rig: Rig, q: DriverQueue) -> None:
    table = rig.driver.buffer(32)
    q.write_desc(0, table[0], 32, F_INDIRECT, 0)
    q.publish(0)


def avail_jump(rig: Rig, q: DriverQueue) -> None:
    buf = rig.driver.buffer(16)
    q.write_desc(0, buf[0], 16, _direction(rig), 0)
    q.publish(0, bump=q.size + 1)


def wrong_direction(rig: Rig, q: DriverQueue) -> None:
    buf = rig.driver.buffer(64)
    q.write_desc(0, buf[0], 64, F_WRITE ^ _direction(rig), 0)
    q.publish(0)


def readable_after_writable(rig: Rig, q: DriverQueue) -> None:
    buf = rig.driver.buffer(64)
    q.write_desc(0, buf[0], 32, F_NEXT | F_WRITE, 1)
    q.write_desc(1, buf[0] + 32, 32, 0, 0)
    q.publish(0)


MALFORMATIONS: list[Callable[[Rig, DriverQueue], None]] = [
    loop,
    next_out_of_range,
    head_out_of_range,
    outside_memory,
    indirect,
    avail_jump,
    wrong_direction,
    readable_after_writable,
]


def assert_failed_once(rig: Rig, caplog: pytest.LogCaptureFixture, queue: int) -> None:
    d = rig.driver
    assert d.r(STATUS) & NEEDS_RESET
    assert d.r(INTERRUPT_STATUS) & 2
    assert d.wire.level
    warnings = [r for r in caplog.records if r.name == "rrvmm" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].getMessage().startswith(f"virtio-{rig.kind}: queue {queue}: ")


@pytest.mark.parametrize("malform", MALFORMATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", KINDS)
def test_malformed_chain_fails_the_device_until_reset(
    kind: str,
    malform: Callable[[Rig, DriverQueue], None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig(kind, disk_image(tmp_path))
    q = rig.kicked
    malform(rig, q)
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        q.kick()
        assert_failed_once(rig, caplog, q.index)
        good_request(rig)  # ignored while failed, and no second warning
        q.kick()
        assert q.used() == [] and rig.out == []
        assert_failed_once(rig, caplog, q.index)

    rig.driver.w(STATUS, 0)  # reset: back to power-on state, line low
    fresh = make_rig(kind, disk_image(tmp_path))
    fresh.driver.w(STATUS, 0)
    assert snapshot(rig.device) == snapshot(fresh.device)
    assert not rig.driver.wire.level

    rig.driver.start(size=8)
    check = good_request(rig, 1)
    rig.kicked.kick()
    check()


def test_console_receive_into_a_readable_buffer_fails(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig("console")
    rx = rig.driver.queues[0]
    rx.post(rig.driver.buffer(8))
    con = rig.device
    assert isinstance(con, VirtioConsole)
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        assert con.rx_room() == 0
        assert con.receive(b"abc") == 0
    assert_failed_once(rig, caplog, 0)


def test_net_receive_into_a_readable_buffer_fails(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig("net")
    rx = rig.driver.queues[0]
    rx.post(rig.driver.buffer(2048))
    net = rig.device
    assert isinstance(net, VirtioNet)
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        assert net.receive(b"x" * 60) is False
        assert not net.rx_ready()
    assert_failed_once(rig, caplog, 0)


def test_used_ring_outside_memory_fails(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig("rng")
    q = rig.kicked
    rig.device.state.queues[0].device_addr = OUTSIDE  # as if the driver had set it so
    q.post(rig.driver.buffer(4, writable=True))
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        q.kick()
    assert_failed_once(rig, caplog, 0)
