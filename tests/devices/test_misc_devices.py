"""isa-debug-exit, the POST port, absent PCI config, and the byte-splitting of wide accesses."""

from __future__ import annotations

import pytest

from rrvmm.devices.bus import Device
from rrvmm.devices.debug_exit import DebugExit
from rrvmm.devices.isa import ByteRegisters
from rrvmm.devices.misc import PciConfigAbsent, PostPort


@pytest.mark.parametrize(
    ("offset", "size", "value", "expect"),
    [
        (0, 1, 0x31, 0x31),
        (0, 2, 0x1234, 0x1234),
        (0, 4, 0xDEADBEEF, 0xDEADBEEF),
        (0, 1, 0x1FF, 0xFF),
    ],
)
def test_debug_exit_value(offset: int, size: int, value: int, expect: int) -> None:
    codes: list[int] = []
    dev = DebugExit(codes.append)
    dev.pio_write(offset, size, value)
    assert codes == [expect]


@pytest.mark.parametrize(("size", "value", "expect"), [(1, 0, 1), (1, 1, 3), (4, 0x1FF, 0x3FF)])
def test_debug_exit_qemu_status(size: int, value: int, expect: int) -> None:
    codes: list[int] = []
    DebugExit(codes.append, qemu_status=True).pio_write(0, size, value)
    assert codes == [expect]  # kvm-unit-tests: exit(0) -> status 1 = PASS, as under QEMU


@pytest.mark.parametrize("size", [1, 2, 4])
def test_debug_exit_reads_all_ones(size: int) -> None:
    dev = DebugExit(lambda v: None)
    assert dev.pio_read(0, size) == (1 << (8 * size)) - 1


@pytest.mark.parametrize("cls", [PostPort, PciConfigAbsent])
@pytest.mark.parametrize(("offset", "size"), [(0, 1), (0, 2), (0, 4), (4, 4), (3, 1)])
def test_silent_ports(cls: type, offset: int, size: int) -> None:
    dev = cls()
    dev.pio_write(offset, size, 0x80000000)
    assert dev.pio_read(offset, size) == (1 << (8 * size)) - 1


def test_all_devices_satisfy_protocol() -> None:
    from rrvmm.devices.bus import IrqLine
    from rrvmm.devices.i8042 import I8042
    from rrvmm.devices.pic import Pic8259Pair
    from rrvmm.devices.pit import Pit8254
    from rrvmm.devices.rtc import CmosRtc
    from rrvmm.devices.uart import Uart16550

    class Clock:
        def now_ns(self) -> int:
            return 0

    def sink(line: int, level: bool) -> None:
        return None

    pit = Pit8254(Clock(), IrqLine(0, sink))
    devices = [
        Uart16550(IrqLine(4, sink), lambda b: None),
        Pic8259Pair(),
        pit,
        pit.port61,
        CmosRtc(lambda: 0.0, 1 << 27),
        I8042(lambda: None),
        DebugExit(lambda v: None),
        PostPort(),
        PciConfigAbsent(),
    ]
    for dev in devices:
        assert isinstance(dev, Device)
        assert dev.mmio_read(0, 4) == 0xFFFFFFFF
        dev.mmio_write(0, 4, 0)


class _Regs(ByteRegisters):
    windows = ((0, 2), (4, 5))

    def __init__(self) -> None:
        self.regs = {0: 0x11, 1: 0x22, 4: 0x44}
        self.writes: list[tuple[int, int]] = []

    def read8(self, offset: int) -> int:
        return self.regs[offset]

    def write8(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))


@pytest.mark.parametrize(
    ("offset", "size", "value"),
    [
        (0, 1, 0x11),
        (0, 2, 0x2211),
        (0, 4, 0xFFFF2211),  # beyond the window: floating bus
        (1, 2, 0xFF22),
        (4, 2, 0xFF44),  # never runs into a neighbouring window
    ],
)
def test_wide_reads_split_within_window(offset: int, size: int, value: int) -> None:
    assert _Regs().pio_read(offset, size) == value


def test_wide_writes_split_low_byte_first() -> None:
    regs = _Regs()
    regs.pio_write(0, 4, 0x44332211)
    assert regs.writes == [(0, 0x11), (1, 0x22)]
