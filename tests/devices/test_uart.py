"""16550A UART: register traffic as Linux's 8250 driver and simple guests produce it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.uart import Uart16550

if TYPE_CHECKING:
    from conftest import IrqLog, Ports

COM1 = 0x3F8
RBR = THR = DLL = COM1 + 0
IER = DLM = COM1 + 1
IIR = FCR = COM1 + 2
LCR = COM1 + 3
MCR = COM1 + 4
LSR = COM1 + 5
MSR = COM1 + 6
SCR = COM1 + 7


class Com1:
    def __init__(self, ports: Ports, irqlog: IrqLog) -> None:
        self.tx: list[bytes] = []
        self.uart = Uart16550(IrqLine(4, irqlog), self.tx.append)
        ports.bus.insert(self.uart, COM1, 8)
        self.p = ports
        self.irqlog = irqlog

    def inb(self, port: int) -> int:
        return self.p.inb(port)

    def outb(self, port: int, value: int) -> None:
        self.p.outb(port, value)

    @property
    def irq(self) -> bool:
        return self.irqlog.level(4)


@pytest.fixture
def com(ports: Ports, irqlog: IrqLog) -> Com1:
    return Com1(ports, irqlog)


def test_power_on_registers(com: Com1) -> None:
    assert com.inb(IIR) == 0x01
    assert com.inb(LSR) == 0x60  # THRE | TEMT
    assert com.inb(MSR) == 0xB0  # DCD | DSR | CTS: a terminal is attached
    assert com.inb(IER) == 0
    assert not com.irq


def test_divisor_latch(com: Com1) -> None:
    com.outb(LCR, 0x83)  # DLAB, 8N1
    com.outb(DLL, 0x01)
    com.outb(DLM, 0x02)
    assert com.inb(DLL) == 0x01
    assert com.inb(DLM) == 0x02
    assert com.p.read(DLL, 2) == 0x0201  # a 16-bit read covers DLL and DLM
    com.outb(LCR, 0x03)
    assert com.inb(IER) == 0  # IER untouched by the divisor writes
    com.outb(IER, 0x05)
    com.outb(LCR, 0x83)
    assert (com.inb(DLL), com.inb(DLM)) == (0x01, 0x02)
    com.outb(LCR, 0x03)
    assert com.inb(IER) == 0x05
    assert com.inb(LCR) == 0x03
    assert com.tx == []  # DLL writes never transmit


@pytest.mark.parametrize("value", [0x00, 0x55, 0xAA, 0xFF])
def test_scratch(com: Com1, value: int) -> None:
    com.outb(SCR, value)
    assert com.inb(SCR) == value


def test_ier_reads_back_low_nibble_only(com: Com1) -> None:
    com.outb(IER, 0xFF)
    assert com.inb(IER) == 0x0F


def test_transmit_calls_tx(com: Com1) -> None:
    for b in b"hi\n":
        com.outb(THR, b)
    assert com.tx == [b"h", b"i", b"\n"]
    assert com.inb(LSR) & 0x60 == 0x60  # THR empty at once


@pytest.mark.parametrize(
    ("mcr", "msr_high"),
    [
        (0x10, 0x00),
        (0x11, 0x20),  # DTR -> DSR
        (0x12, 0x10),  # RTS -> CTS
        (0x14, 0x40),  # OUT1 -> RI
        (0x18, 0x80),  # OUT2 -> DCD
        (0x1A, 0x90),  # Linux's loopback probe value
        (0x1F, 0xF0),
    ],
)
def test_loopback_modem_lines(com: Com1, mcr: int, msr_high: int) -> None:
    com.outb(MCR, mcr)
    assert com.inb(MSR) & 0xF0 == msr_high


def test_loopback_data_and_deltas(com: Com1) -> None:
    com.outb(MCR, 0x10)  # loop, all outputs off: DCD, DSR, CTS drop
    assert com.inb(MSR) == 0x08 | 0x02 | 0x01  # DDCD | DDSR | DCTS
    assert com.inb(MSR) == 0x00  # deltas clear on read
    com.outb(MCR, 0x14)  # OUT1 -> RI rises: no TERI on a rising edge
    assert com.inb(MSR) == 0x40
    com.outb(MCR, 0x10)  # RI falls: trailing edge
    assert com.inb(MSR) == 0x04
    com.outb(THR, 0x41)
    assert com.tx == []
    assert com.inb(LSR) & 0x01
    assert com.inb(RBR) == 0x41
    assert not com.inb(LSR) & 0x01
    assert com.uart.rx_room() == 0
    assert com.uart.receive(b"x") == 0  # the RX pin is cut off in loopback
    com.outb(MCR, 0x00)
    assert com.uart.rx_room() == 1


@pytest.mark.parametrize(("fcr", "kept"), [(0x00, b"B"), (0x01, bytes(range(16)))])
def test_loopback_overrun(com: Com1, fcr: int, kept: bytes) -> None:
    com.outb(FCR, fcr)
    com.outb(MCR, 0x10)
    data = b"AB" if fcr == 0 else bytes(range(17))
    for b in data:
        com.outb(THR, b)
    assert com.inb(LSR) & 0x03 == 0x03  # DR | OE
    assert not com.inb(LSR) & 0x02  # OE clears on read
    got = bytearray()
    while com.inb(LSR) & 0x01:
        got.append(com.inb(RBR))
    assert bytes(got) == kept


def test_fifo_detection_bits(com: Com1) -> None:
    com.outb(FCR, 0x01)
    assert com.inb(IIR) & 0xC0 == 0xC0
    com.outb(FCR, 0x00)
    assert com.inb(IIR) & 0xC0 == 0x00


@pytest.mark.parametrize(("fcr", "trigger"), [(0x01, 1), (0x41, 4), (0x81, 8), (0xC1, 14)])
def test_fifo_trigger_level(com: Com1, fcr: int, trigger: int) -> None:
    com.outb(FCR, fcr)
    com.outb(IER, 0x01)
    com.outb(MCR, 0x08)
    assert com.uart.rx_room() == 16
    if trigger > 1:
        assert com.uart.receive(bytes(trigger - 1)) == trigger - 1
        assert com.inb(IIR) == 0xCC  # below trigger: character timeout (immediate)
        assert com.irq
    assert com.uart.receive(b"\x01") == 1
    assert com.inb(IIR) == 0xC4  # trigger level reached
    assert com.uart.receive(bytes(32)) == 16 - trigger  # never overruns from the host
    assert com.uart.rx_room() == 0
    assert not com.inb(LSR) & 0x02
    for _ in range(16):
        com.inb(RBR)
    assert com.inb(IIR) == 0xC1
    assert not com.irq


def test_rx_holding_register_without_fifo(com: Com1) -> None:
    assert com.uart.rx_room() == 1
    assert com.uart.receive(b"ab") == 1
    assert com.uart.rx_room() == 0
    assert com.inb(RBR) == ord("a")
    assert com.uart.receive(b"b") == 1


def test_rx_interrupt_assert_deassert(com: Com1) -> None:
    com.outb(MCR, 0x0B)  # DTR | RTS | OUT2
    com.outb(IER, 0x01)
    assert not com.irq
    com.uart.receive(b"k")
    assert com.irq
    assert com.inb(IIR) == 0x04
    assert com.inb(RBR) == ord("k")
    assert not com.irq
    assert com.inb(IIR) == 0x01


def test_out2_gates_the_irq_line(com: Com1) -> None:
    com.outb(IER, 0x01)
    com.uart.receive(b"k")
    assert com.inb(IIR) == 0x04  # pending inside the chip...
    assert not com.irq  # ...but OUT2 is off, so nothing reaches the PIC
    com.outb(MCR, 0x08)
    assert com.irq
    com.outb(MCR, 0x00)
    assert not com.irq


def test_thre_interrupt_semantics(com: Com1) -> None:
    com.outb(MCR, 0x08)
    com.outb(IER, 0x02)
    assert com.irq  # THR is empty, so enabling THRI raises it at once
    assert com.inb(IIR) == 0x02
    assert not com.irq  # reading IIR with THRE as source clears it
    assert com.inb(IIR) == 0x01
    rises = com.irqlog.rising(4)
    com.outb(THR, ord("x"))
    assert com.tx == [b"x"]
    assert com.irq  # the byte left at once: THRE again
    assert com.irqlog.rising(4) == rises + 1
    com.outb(THR, ord("y"))  # while still pending: a fresh edge per byte
    assert com.irqlog.rising(4) == rises + 2
    com.outb(IER, 0x00)
    assert not com.irq
    com.outb(IER, 0x02)
    assert com.irq
    assert com.inb(IIR) == 0x02


def test_iir_priority(com: Com1) -> None:
    com.outb(FCR, 0x01)  # FIFO on, trigger 1
    com.outb(MCR, 0x18)  # loopback + OUT2 (irq visible), modem deltas from entering loop
    for b in range(17):  # fill the FIFO and overrun it
        com.outb(THR, b)
    com.outb(IER, 0x0F)
    assert com.inb(IIR) == 0xC6  # line status first
    com.inb(LSR)
    assert com.inb(IIR) == 0xC4  # then received data
    for _ in range(16):
        com.inb(RBR)
    assert com.inb(IIR) == 0xC2  # then THR empty (and this read clears it)
    assert com.inb(IIR) == 0xC0  # then modem status
    assert com.irq
    com.inb(MSR)
    assert com.inb(IIR) == 0xC1
    assert not com.irq


def test_fcr_clear_receiver(com: Com1) -> None:
    com.outb(FCR, 0x01)
    com.uart.receive(b"abc")
    com.outb(FCR, 0x03)
    assert not com.inb(LSR) & 0x01
    com.uart.receive(b"abc")
    com.outb(FCR, 0x00)  # leaving FIFO mode flushes too
    assert not com.inb(LSR) & 0x01
    assert com.uart.rx_room() == 1


def test_linux_autoconfig_finds_16550a(com: Com1) -> None:
    """The register dance of drivers/tty/serial/8250/8250_port.c:autoconfig()."""
    inb, outb = com.inb, com.outb
    # IER test
    scratch = inb(IER)
    outb(IER, 0)
    scratch2 = inb(IER) & 0x0F
    outb(IER, 0x0F)
    scratch3 = inb(IER) & 0x0F
    outb(IER, scratch)
    assert (scratch2, scratch3) == (0, 0x0F)
    save_mcr = inb(MCR)
    save_lcr = inb(LCR)
    # loopback test
    outb(MCR, 0x10 | 0x0A)
    status1 = inb(MSR) & 0xF0
    outb(MCR, save_mcr)
    assert status1 == 0x90
    # FIFO type
    outb(LCR, 0xBF)
    outb(FCR, 0)  # "EFR"
    outb(LCR, 0)
    outb(FCR, 0x01)
    assert inb(IIR) >> 6 == 3
    # autoconfig_16550a: no EFR under either config mode
    outb(LCR, 0x80)
    assert inb(IIR) != 0
    outb(LCR, 0xBF)
    assert inb(IIR) != 0
    # not a National SuperIO: "EXCR1" does not follow MCR.LOOP
    outb(LCR, 0)
    status1 = inb(MCR)
    outb(LCR, 0xE0)
    status2 = inb(IIR)
    assert not (status1 ^ status2) & 0x10
    outb(LCR, 0)
    outb(MCR, status1 ^ 0x10)
    outb(LCR, 0xE0)
    status2 = inb(IIR)
    outb(LCR, 0)
    outb(MCR, status1)
    assert not (status2 ^ status1) & 0x10
    # not a 16750: the 64-byte FIFO bit never shows in IIR
    outb(LCR, 0)
    outb(FCR, 0x21)
    status1 = inb(IIR) >> 5
    outb(FCR, 0x01)
    outb(LCR, 0x80)
    outb(FCR, 0x21)
    status2 = inb(IIR) >> 5
    outb(FCR, 0x01)
    outb(LCR, 0)
    assert (status1, status2) == (6, 6)
    # not an XScale: IER bit 6 (UUE) does not stick
    iersave = inb(IER)
    outb(IER, iersave | 0x40)
    assert not inb(IER) & 0x40
    outb(IER, iersave)
    outb(LCR, save_lcr)
    # serial8250_do_startup: clear FIFOs, read the clear-on-read registers, LSR sanity
    outb(FCR, 0x01)
    outb(FCR, 0x07)
    outb(FCR, 0)
    for reg in (LSR, RBR, IIR, MSR):
        inb(reg)
    assert inb(LSR) != 0xFF
    # THRE re-assertion test (otherwise Linux marks UART_BUG_THRE)
    outb(MCR, 0x0B)
    outb(IER, 0x02)
    iir1 = inb(IIR)
    outb(IER, 0)
    outb(IER, 0x02)
    iir = inb(IIR)
    outb(IER, 0)
    assert not iir1 & 0x01
    assert not iir & 0x01
    assert com.tx == []


def test_reset_drops_irq(com: Com1) -> None:
    com.outb(MCR, 0x08)
    com.outb(IER, 0x02)
    assert com.irq
    com.uart.reset()
    assert not com.irq
    assert com.inb(MCR) == 0
