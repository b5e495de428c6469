"""virtio-net: frames cross without the 12-byte virtio_net_hdr_v1."""

from __future__ import annotations

import struct

from driver import Driver, DriverQueue

from rrvmm.devices.virtio import VirtioNet
from rrvmm.devices.virtio.net import VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS

FRAME = bytes.fromhex("ffffffffffff5254001234560806") + bytes(range(46))


def started() -> tuple[Driver, VirtioNet, DriverQueue, DriverQueue, list[bytes]]:
    sent: list[bytes] = []
    net = VirtioNet(sent.append)
    d = Driver(net)
    rx, tx = d.start()
    return d, net, rx, tx, sent


def test_features_and_config() -> None:
    d, *_ = started()
    feats = d.device_features()
    assert feats & VIRTIO_NET_F_MAC and feats & VIRTIO_NET_F_STATUS
    mac = bytes(d.config(i, 1) for i in range(6))
    assert mac == bytes.fromhex("525400123456")
    assert d.config(6, 2) == 1  # VIRTIO_NET_S_LINK_UP


def test_transmit_strips_the_header() -> None:
    d, _net, _rx, tx, sent = started()
    head = tx.post(d.buffer(bytes(12)), d.buffer(FRAME))
    tx.kick()
    assert sent == [FRAME]
    assert tx.used() == [(head, 0)]
    head = tx.post(d.buffer(bytes(12) + FRAME))  # header and frame in one descriptor
    tx.kick()
    assert sent == [FRAME, FRAME]


def test_receive_prepends_a_header() -> None:
    d, net, rx, _tx, _sent = started()
    assert not net.rx_ready()
    assert net.receive(FRAME) is False
    buf = d.buffer(1526, writable=True)
    head = rx.post(buf)
    rx.kick()
    assert net.rx_ready()
    assert net.receive(FRAME) is True
    assert rx.used() == [(head, 12 + len(FRAME))]
    hdr = d.read(buf, 12)
    assert hdr == bytes(10) + struct.pack("<H", 1)
    assert d.read(buf, 12 + len(FRAME))[12:] == FRAME
    assert d.interrupt() == 1
    assert not net.rx_ready()


def test_frame_too_big_for_the_buffer_is_dropped_and_the_buffer_kept() -> None:
    d, net, rx, _tx, _sent = started()
    head = rx.post(d.buffer(64, writable=True))
    assert net.receive(bytes(100)) is True
    assert rx.used() == []
    assert net.receive(FRAME[:40]) is True
    assert rx.used() == [(head, 52)]
