"""snapshot/restore: plain msgpack-able data, and a restored device behaves identically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.debug_exit import DebugExit
from rrvmm.devices.i8042 import I8042
from rrvmm.devices.misc import PciConfigAbsent, PostPort
from rrvmm.devices.pic import Pic8259Pair, PicChipState
from rrvmm.devices.pit import Pit8254, PitChannelState, ticks_to_ns
from rrvmm.devices.rtc import CmosRtc
from rrvmm.devices.state import restore, snapshot
from rrvmm.devices.uart import Uart16550


class Rig:
    """A device, the log of everything it did to its wiring, and a scripted workload."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.t = 0

    def now_ns(self) -> int:
        return self.t

    def sink(self, line: int, level: bool) -> None:
        self.log.append(("irq", line, level))

    def r(self, dev: Any, off: int, size: int = 1) -> None:
        self.log.append(("r", off, dev.pio_read(off, size)))

    def w(self, dev: Any, off: int, value: int, size: int = 1) -> None:
        dev.pio_write(off, size, value)


def uart_rig() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
    rig = Rig()
    u = Uart16550(IrqLine(4, rig.sink), lambda b: rig.log.append(("tx", b)))

    def warm() -> None:
        rig.w(u, 2, 0x81)
        rig.w(u, 4, 0x08)
        rig.w(u, 1, 0x03)
        u.receive(b"abc")
        rig.r(u, 0)

    def work() -> None:
        u.receive(b"defghijk")
        for _ in range(6):
            rig.r(u, 2)
            rig.r(u, 0)
        rig.w(u, 0, 0x5A)
        rig.w(u, 4, 0x18)
        rig.w(u, 0, 0x33)
        rig.r(u, 6)
        rig.r(u, 5)
        rig.r(u, 0, 2)
        rig.log.append(("room", u.rx_room()))

    return rig, u, warm, work


def pic_rig() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
    rig = Rig()
    p = Pic8259Pair()

    def warm() -> None:
        for off, v in ((0, 0x11), (1, 0x20), (1, 4), (1, 1), (2, 0x11), (3, 0x28), (3, 2), (3, 1)):
            rig.w(p, off, v)
        p.set_irq(3, True)
        p.set_irq(12, True)
        rig.log.append(("ack", p.acknowledge()))

    def work() -> None:
        p.set_irq(1, True)
        p.set_irq(3, False)
        p.set_irq(3, True)
        for _ in range(3):
            rig.log.append(("ack", p.acknowledge()))
            rig.w(p, 2, 0x20)
            rig.w(p, 0, 0x20)
        rig.w(p, 0, 0x0B)
        rig.r(p, 0)
        rig.r(p, 1)
        rig.log.append(("pending", p.has_interrupt()))

    return rig, p, warm, work


def pit_rig() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
    rig = Rig()
    pit = Pit8254(rig, IrqLine(0, rig.sink))
    base = 5_000_000

    def warm() -> None:
        rig.t = base
        rig.w(pit, 3, 0x34)
        rig.w(pit, 0, 0xA9)
        rig.w(pit, 0, 0x04)
        pit.port61.pio_write(0, 1, 0x01)
        rig.w(pit, 3, 0xB0)
        rig.w(pit, 2, 0x00)
        rig.w(pit, 2, 0x10)
        rig.t += 300_000
        rig.w(pit, 3, 0x00)  # leave a latch half-read
        rig.r(pit, 0)

    def work() -> None:
        rig.t = base + 400_000
        rig.r(pit, 0)
        rig.r(pit, 0)
        rig.r(pit, 0)
        for i in range(1, 6):
            rig.t = base + i * 1_000_000
            pit.update(rig.t)
            rig.log.append(("deadline", pit.next_deadline_ns()))
            rig.log.append(("61", pit.port61.pio_read(0, 1)))
            rig.r(pit, 2)
        rig.w(pit, 0, 0x10)  # mode 2: deferred reload
        rig.w(pit, 0, 0x00)
        rig.log.append(("deadline", pit.next_deadline_ns()))
        pit.update(rig.t + ticks_to_ns(20_000))

    return rig, pit, warm, work


def rtc_rig() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
    rig = Rig()
    wall = [1_700_000_000.5]
    rtc = CmosRtc(lambda: wall[0], 256 << 20)

    def warm() -> None:
        rig.w(rtc, 0, 0x8B)
        rig.w(rtc, 1, 0x82)
        rig.w(rtc, 0, 0x04)
        rig.w(rtc, 1, 0x07)  # held while SET is on

    def work() -> None:
        wall[0] = 1_700_000_100.5
        rig.w(rtc, 0, 0x0B)
        rig.w(rtc, 1, 0x06)
        for reg in (0, 2, 4, 6, 7, 8, 9, 0x32, 0x0A, 0x0C, 0x15, 0x34):
            rig.w(rtc, 0, reg)
            rig.r(rtc, 1)
        rig.log.append(("nmi", rtc.nmi_disabled))

    return rig, rtc, warm, work


def i8042_rig() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
    rig = Rig()
    k = I8042(lambda: rig.log.append("reset"), IrqLine(1, rig.sink), IrqLine(12, rig.sink))

    def warm() -> None:
        rig.w(k, 4, 0xAA)
        rig.w(k, 4, 0xD3)
        rig.w(k, 0, 0x5A)
        rig.w(k, 4, 0x60)  # data byte still to come

    def work() -> None:
        rig.w(k, 0, 0x47)
        for _ in range(3):
            rig.r(k, 4)
            rig.r(k, 0)
        rig.w(k, 4, 0x20)
        rig.r(k, 0)
        rig.w(k, 0, 0xFF)
        rig.r(k, 4)
        rig.w(k, 4, 0xFE)

    return rig, k, warm, work


def simple_rig(make: Callable[[Rig], Any]) -> Callable[[], tuple]:
    def build() -> tuple[Rig, Any, Callable[[], None], Callable[[], None]]:
        rig = Rig()
        dev = make(rig)

        def work() -> None:
            rig.w(dev, 0, 7)
            rig.r(dev, 0)
            rig.r(dev, 0, 4)

        return rig, dev, lambda: None, work

    return build


RIGS = {
    "uart": uart_rig,
    "pic": pic_rig,
    "pit": pit_rig,
    "rtc": rtc_rig,
    "i8042": i8042_rig,
    "debug_exit": simple_rig(lambda rig: DebugExit(lambda v: rig.log.append(("exit", v)))),
    "post": simple_rig(lambda rig: PostPort()),
    "pci": simple_rig(lambda rig: PciConfigAbsent()),
}


@pytest.mark.parametrize("name", sorted(RIGS))
def test_snapshot_restore_replays_identically(name: str) -> None:
    rig, dev, warm, work = RIGS[name]()
    warm()
    snap = snapshot(dev)
    wire = msgpack.unpackb(msgpack.packb(snap))
    assert wire == snap

    mark = len(rig.log)
    work()
    first = rig.log[mark:]
    after_first = snapshot(dev)
    assert first, "the workload observed nothing"

    restore(dev, wire)
    assert snapshot(dev) == snap
    mark = len(rig.log)
    work()
    assert rig.log[mark:] == first
    assert snapshot(dev) == after_first


def test_restore_does_not_alias_data() -> None:
    rig, uart, warm, _ = uart_rig()
    warm()
    data = snapshot(uart)
    restore(uart, data)
    data["rx_fifo"].append(0x99)
    data["scr"] = 0x42
    assert 0x99 not in uart.state.rx_fifo
    assert uart.state.scr == 0


def test_nested_dataclasses_are_rebuilt() -> None:
    pic = Pic8259Pair()
    pit = Pit8254(Rig(), IrqLine(0, lambda line, level: None))
    restore(pic, snapshot(pic))
    restore(pit, snapshot(pit))
    assert isinstance(pic.state.master, PicChipState)
    assert all(isinstance(ch, PitChannelState) for ch in pit.state.channels)
    assert pit.state.channels[2].gate is False


def test_restore_rejects_mismatched_layout() -> None:
    uart = Uart16550(IrqLine(4, lambda line, level: None), lambda b: None)
    data = snapshot(uart)
    with pytest.raises(ValueError, match="missing"):
        restore(uart, {k: v for k, v in data.items() if k != "ier"})
    with pytest.raises(ValueError, match="unknown"):
        restore(uart, {**data, "bogus": 1})
    with pytest.raises(TypeError):
        restore(uart, {**data, "ier": "x"})
    with pytest.raises(TypeError):
        restore(uart, {**data, "thr_ipending": 1})


@dataclass
class _Inner:
    pair: tuple[int, int] = (1, 2)
    blob: bytes = b"\x00\x01"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    rows: list[_Inner] = field(default_factory=lambda: [_Inner(), _Inner((3, 4), b"x")])
    ints: tuple[int, ...] = (5, 6, 7)
    name: str = "x"


class _Holder:
    def __init__(self, state: Any) -> None:
        self.state = state


def test_tuples_bytes_and_nesting_round_trip() -> None:
    dev = _Holder(_Outer())
    data = msgpack.unpackb(msgpack.packb(snapshot(dev)))
    dev.state = _Outer(name="changed")
    restore(dev, data)
    assert dev.state == _Outer()
    assert isinstance(dev.state.rows[1], _Inner)
    assert dev.state.rows[1].pair == (3, 4)


def test_snapshot_rejects_non_plain_state() -> None:
    @dataclass
    class Bad:
        callback: Any = print

    with pytest.raises(TypeError):
        snapshot(_Holder(Bad()))
    with pytest.raises(TypeError):
        snapshot(_Holder({"not": "a dataclass"}))
