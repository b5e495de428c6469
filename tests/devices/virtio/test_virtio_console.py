"""virtio-console: guest output to ``on_output``, host input only through ``receive``."""

from __future__ import annotations

from driver import Driver, DriverQueue

from rrvmm.devices.virtio import VirtioConsole


def started() -> tuple[Driver, DriverQueue, DriverQueue, list[bytes]]:
    out: list[bytes] = []
    d = Driver(VirtioConsole(out.append))
    rx, tx = d.start()
    return d, rx, tx, out


def test_no_features_beyond_version_1_and_two_queues() -> None:
    d, *_ = started()
    assert d.device_features() == 1 << 32
    assert d.device.num_queues == 2


def test_transmit_reaches_on_output() -> None:
    d, _rx, tx, out = started()
    head = tx.post(d.buffer(b"hello, "), d.buffer(b"world\n"))
    tx.kick()
    assert out == [b"hello, world\n"]
    assert tx.used() == [(head, 0)]
    assert d.interrupt() == 1


def test_receive_fills_posted_buffers_and_returns_the_count() -> None:
    d, rx, _tx, _out = started()
    con = d.device
    assert isinstance(con, VirtioConsole)
    a, b = d.buffer(4, writable=True), d.buffer(8, writable=True)
    ha, hb = rx.post(a), rx.post(b)
    rx.kick()
    assert con.rx_room() == 12
    assert con.receive(b"abcdefghijklmnop") == 12
    assert rx.used() == [(ha, 4), (hb, 8)]
    assert d.read(a) + d.read(b) == b"abcdefghijkl"
    assert con.rx_room() == 0
    assert con.receive(b"mnop") == 0
    assert d.interrupt() == 1


def test_short_input_uses_one_buffer_partly() -> None:
    d, rx, _tx, _out = started()
    con = d.device
    assert isinstance(con, VirtioConsole)
    buf = d.buffer(64, writable=True)
    head = rx.post(buf)
    rx.post(d.buffer(64, writable=True))
    assert con.receive(b"ls\r") == 3
    assert rx.used() == [(head, 3)]
    assert con.rx_room() == 64


def test_no_buffers_takes_nothing() -> None:
    d, _rx, _tx, _out = started()
    con = d.device
    assert isinstance(con, VirtioConsole)
    assert con.rx_room() == 0
    assert con.receive(b"x") == 0
    assert d.r(0x060) == 0


def test_nothing_received_before_driver_ok() -> None:
    con = VirtioConsole(lambda b: None)
    d = Driver(con)
    assert d.negotiate()
    rx = d.setup_queue(0)
    rx.post(d.buffer(8, writable=True))
    assert con.rx_room() == 0 and con.receive(b"x") == 0
    d.setup_queue(1)
    d.driver_ok()
    assert con.receive(b"x") == 1
