"""i8042 without devices: controller commands, reset line, and Linux's probe sequence."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.i8042 import I8042

if TYPE_CHECKING:
    from conftest import IrqLog, Ports

DATA, CMD = 0x60, 0x64
OBF, AUXDATA, TIMEOUT, SYSFLAG = 0x01, 0x20, 0x40, 0x04


class Kbc:
    def __init__(self, ports: Ports, irqlog: IrqLog | None = None) -> None:
        self.resets = 0
        irq1 = IrqLine(1, irqlog) if irqlog else None
        irq12 = IrqLine(12, irqlog) if irqlog else None
        self.dev = I8042(self._reset, irq1, irq12)
        ports.bus.insert(self.dev, 0x60, 1, offset=0)
        ports.bus.insert(self.dev, 0x64, 1, offset=4)
        self.inb = ports.inb
        self.outb = ports.outb

    def _reset(self) -> None:
        self.resets += 1

    def command(self, cmd: int, *params: int, results: int = 0) -> list[int]:
        """Linux's __i8042_command(): command, parameter bytes, then poll for results."""
        assert not self.inb(CMD) & 0x02
        self.outb(CMD, cmd)
        for p in params:
            assert not self.inb(CMD) & 0x02
            self.outb(DATA, p)
        out = []
        for _ in range(results):
            assert self.inb(CMD) & OBF, f"no result for command {cmd:#x}"
            out.append(self.inb(DATA))
        return out

    def flush(self) -> int:
        n = 0
        while self.inb(CMD) & OBF:
            self.inb(DATA)
            n += 1
            assert n < 16
        return n


@pytest.fixture
def kbc(ports: Ports) -> Kbc:
    return Kbc(ports)


def test_power_on_status(kbc: Kbc) -> None:
    assert kbc.inb(CMD) == 0x18  # keylock released, last write "command"; nothing buffered
    assert kbc.flush() == 0


def test_self_test(kbc: Kbc) -> None:
    assert kbc.command(0xAA, results=1) == [0x55]
    assert kbc.inb(CMD) & SYSFLAG
    assert not kbc.inb(CMD) & OBF


@pytest.mark.parametrize("cmd", [0xAB, 0xA9])
def test_interface_tests(kbc: Kbc, cmd: int) -> None:
    assert kbc.command(cmd, results=1) == [0x00]


def test_command_byte_round_trip(kbc: Kbc) -> None:
    assert kbc.command(0x20, results=1) == [0x03]
    kbc.command(0x60, 0x65)
    assert kbc.inb(CMD) & 0x08 == 0  # last write went to the data port
    assert kbc.command(0x20, results=1) == [0x65]
    assert kbc.inb(CMD) & SYSFLAG  # command byte bit 2 shows in the status


@pytest.mark.parametrize(
    ("cmd", "ctr_bit", "sets"),
    [(0xAD, 0x10, True), (0xAE, 0x10, False), (0xA7, 0x20, True), (0xA8, 0x20, False)],
)
def test_port_enable_disable(kbc: Kbc, cmd: int, ctr_bit: int, sets: bool) -> None:
    kbc.command(0x60, 0x30 if not sets else 0x00)
    kbc.command(cmd)
    assert bool(kbc.command(0x20, results=1)[0] & ctr_bit) == sets


def test_reset_pulse(kbc: Kbc) -> None:
    kbc.command(0xFF)  # pulses no line
    assert kbc.resets == 0
    kbc.outb(CMD, 0xFE)
    assert kbc.resets == 1


def test_output_port(kbc: Kbc) -> None:
    assert kbc.command(0xD0, results=1) == [0xCF]
    kbc.command(0xDD)
    assert kbc.command(0xD0, results=1) == [0xCD]
    kbc.command(0xD1, 0xDF)
    assert kbc.command(0xD0, results=1) == [0xCF]  # bits 4/5 mirror the output buffer
    kbc.command(0xD1, 0xC3)
    assert kbc.command(0xD0, results=1) == [0xC3]
    assert kbc.resets == 0
    kbc.command(0xD1, 0xDE)  # bit 0 low: reset
    assert kbc.resets == 1


def test_device_writes_time_out(kbc: Kbc) -> None:
    kbc.outb(DATA, 0xFF)  # keyboard reset: nobody answers
    assert kbc.inb(CMD) & (TIMEOUT | OBF) == TIMEOUT
    kbc.command(0xD4, 0xF2)  # mouse GETID
    assert kbc.inb(CMD) & (TIMEOUT | OBF) == TIMEOUT
    kbc.command(0x20, results=1)
    assert not kbc.inb(CMD) & TIMEOUT


def test_loop_commands(kbc: Kbc) -> None:
    kbc.command(0xD3, 0x5A)
    assert kbc.inb(CMD) & (OBF | AUXDATA) == OBF | AUXDATA
    assert kbc.inb(DATA) == 0x5A
    kbc.command(0xD2, 0x1C)
    assert kbc.inb(CMD) & (OBF | AUXDATA) == OBF
    assert kbc.inb(DATA) == 0x1C
    assert kbc.inb(DATA) == 0x1C  # an empty buffer repeats the last byte


def test_irq_lines(ports: Ports, irqlog: IrqLog) -> None:
    kbc = Kbc(ports, irqlog)
    kbc.command(0xD3, 0xA5)  # AUX_INT set in the default command byte
    assert irqlog.level(12)
    kbc.inb(DATA)
    assert not irqlog.level(12)
    kbc.command(0xD2, 0x1C)
    assert irqlog.level(1)
    kbc.inb(DATA)
    assert not irqlog.level(1)
    kbc.command(0x60, 0x00)  # interrupts off: results are polled silently
    kbc.command(0x20, results=1)
    assert irqlog.rising(1) == 1


def test_linux_probe(kbc: Kbc) -> None:
    """drivers/input/serio/i8042.c: controller check, self-test, init, AUX check."""
    kbc.flush()
    assert kbc.command(0xAA, results=1) == [0x55]
    ctr = kbc.command(0x20, results=1)[0]
    assert kbc.command(0x20, results=1)[0] == ctr
    assert kbc.inb(CMD) & 0x10  # keylock not active
    ctr = (ctr | 0x10) & ~0x01  # KBDDIS, no KBDINT
    kbc.command(0x60, ctr)
    kbc.flush()
    # i8042_check_aux
    assert kbc.command(0xD3, 0x5A, results=1) == [0x5A]
    kbc.command(0xA7)
    assert kbc.command(0x20, results=1)[0] & 0x20
    kbc.command(0xA8)
    assert not kbc.command(0x20, results=1)[0] & 0x20
    # keyboard port: the device never answers, the controller never hangs
    kbc.outb(DATA, 0xF2)
    assert kbc.flush() == 0
    assert kbc.resets == 0
