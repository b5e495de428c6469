"""Checkpoints: a device restored from ``snapshot`` mid-stream continues exactly as the
original does, including the block overlay and buffers the guest had posted."""

from __future__ import annotations

import copy
from pathlib import Path

import msgpack
import pytest
from driver import Driver, Ram
from rigs import KINDS, Rig, disk_image, good_request, make_device, make_rig

from rrvmm.devices.state import restore, snapshot
from rrvmm.devices.virtio import VirtioConsole, VirtioNet


def feed(rig: Rig, n: int) -> None:
    """Host input for the devices that take it; recorded in ``rig.out``."""
    dev = rig.device
    if isinstance(dev, VirtioConsole):
        rig.out.append(("took", bytes([dev.receive(b"input %d;" % n)])))
    elif isinstance(dev, VirtioNet):
        rig.out.append(("rx", bytes([dev.receive(bytes([n]) * 60)])))


def post_rx(rig: Rig, count: int) -> None:
    if rig.kind in ("console", "net"):
        rx = rig.driver.queues[0]
        for _ in range(count):
            rx.post(rig.driver.buffer(1600, writable=True))
        rx.kick()


def warm(rig: Rig) -> None:
    post_rx(rig, 3)
    for n in range(3):
        check = good_request(rig, n)
        rig.kicked.kick()
        check()
        feed(rig, n)
    good_request(rig, 3)  # posted, not yet kicked: the checkpoint lands mid-stream


def work(rig: Rig) -> list[object]:
    rig.kicked.kick()
    first = rig.kicked.used()
    for n in range(4, 9):
        post_rx(rig, 1)
        check = good_request(rig, n)
        rig.kicked.kick()
        feed(rig, n)
        rig.driver.interrupt()
        check()
    for n in range(2):
        good_request(rig, 100 + n)
    rig.kicked.kick()
    return [first, list(rig.out), list(rig.driver.wire.levels), bytes(rig.driver.ram.buf)]


def clone(rig: Rig, data: dict[str, object], disk_path: Path) -> Rig:
    """A new device + transport restored from ``data``, with copies of RAM and the driver's
    own bookkeeping, as a checkpoint restore of the whole machine would give."""
    out = list(rig.out)
    ram = Ram(len(rig.driver.ram.buf))
    ram.buf[:] = rig.driver.ram.buf
    driver = Driver(make_device(rig.kind, disk_path, out), ram)
    restore(driver.dev, data)
    driver._next = rig.driver._next
    driver.wire.levels = list(rig.driver.wire.levels)
    for q in rig.driver.queues:
        dq = copy.copy(q)
        dq.driver = driver
        driver.queues.append(dq)
    return Rig(rig.kind, driver, out)


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_restore_mid_stream_continues_identically(kind: str, tmp_path: Path) -> None:
    path = disk_image(tmp_path)
    a = make_rig(kind, path)
    warm(a)
    data = msgpack.unpackb(msgpack.packb(snapshot(a.driver.dev)))
    b = clone(a, data, path)
    result = work(a)
    assert len(result[0]) == 1 and not a.device.failed
    assert result == work(b)
    assert snapshot(a.device) == snapshot(b.device)


def test_block_overlay_travels_in_the_checkpoint(tmp_path: Path) -> None:
    path = disk_image(tmp_path)
    a = make_rig("blk", path)
    warm(a)
    overlay = snapshot(a.device)["disk"]["overlay"]
    assert overlay and all(isinstance(k, str) for k in overlay)
    b = clone(a, snapshot(a.device), path)
    assert b.device.state.disk is b.device.disk.state  # type: ignore[attr-defined]
    assert b.device.disk.read(1, 1) == b"\x01" * 512  # type: ignore[attr-defined]
