"""16550A UART (COM1 at 0x3f8, IRQ 4), modelled closely enough for Linux's 8250 driver.

Transmission is instant: the run loop has no notion of baud-rate time, so THR is always
empty again by the time the guest can look (LSR.THRE and LSR.TEMT always read 1).  Reception
is offered by the host through ``receive``, never more than fits, so the host side cannot
overrun; only loopback traffic can (and then sets LSR.OE like the chip).

Approximations, each chosen so the result is deterministic in guest I/O alone:
- The receive FIFO's character timeout fires at once: while data sits below the trigger level
  IIR reports ``UART_IIR_RX_TIMEOUT``, at or above it ``UART_IIR_RDI``.  Either way the
  interrupt is pending whenever data is present, which is what the trigger-level-plus-timeout
  rule converges to.
- A THR write drops the THRE interrupt and raises it again at once (the byte "shifted out"),
  so the IRQ output makes a falling and a rising edge, as the real chip does one character
  time later.  An edge-triggered PIC therefore sees a fresh request for every byte written.
- The modem inputs outside loopback are fixed as a terminal that is present (DCD, DSR, CTS
  asserted, RI not), as QEMU does.
- The IRQ output is ``pending and MCR.OUT2``: PCs gate the UART interrupt with OUT2 and
  Linux sets it when it wants interrupts.  Loopback does not additionally gate it (as QEMU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.isa import ByteRegisters

__all__ = ["Uart16550", "UartState", "UART_FIFO_SIZE"]

# Register offsets (linux/serial_reg.h).
UART_RX = 0  # in: receive buffer (DLAB=0)
UART_TX = 0  # out: transmit holding register (DLAB=0)
UART_DLL = 0  # divisor latch low (DLAB=1)
UART_DLM = 1  # divisor latch high (DLAB=1)
UART_IER = 1  # interrupt enable (DLAB=0)
UART_IIR = 2  # in: interrupt identification
UART_FCR = 2  # out: FIFO control
UART_LCR = 3  # line control
UART_MCR = 4  # modem control
UART_LSR = 5  # line status
UART_MSR = 6  # modem status
UART_SCR = 7  # scratch

UART_IER_RDI = 0x01
UART_IER_THRI = 0x02
UART_IER_RLSI = 0x04
UART_IER_MSI = 0x08

UART_IIR_NO_INT = 0x01
UART_IIR_MSI = 0x00
UART_IIR_THRI = 0x02
UART_IIR_RDI = 0x04
UART_IIR_RLSI = 0x06
UART_IIR_RX_TIMEOUT = 0x0C
UART_IIR_FIFO_ENABLED = 0xC0

UART_FCR_ENABLE_FIFO = 0x01
UART_FCR_CLEAR_RCVR = 0x02
UART_FCR_CLEAR_XMIT = 0x04
UART_FCR_DMA_SELECT = 0x08
UART_FCR_TRIGGER_MASK = 0xC0

UART_LCR_DLAB = 0x80

UART_MCR_DTR = 0x01
UART_MCR_RTS = 0x02
UART_MCR_OUT1 = 0x04
UART_MCR_OUT2 = 0x08
UART_MCR_LOOP = 0x10

UART_LSR_DR = 0x01
UART_LSR_OE = 0x02
UART_LSR_PE = 0x04
UART_LSR_FE = 0x08
UART_LSR_BI = 0x10
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_LSR_BRK_ERROR_BITS = 0x1E

UART_MSR_DCTS = 0x01
UART_MSR_DDSR = 0x02
UART_MSR_TERI = 0x04
UART_MSR_DDCD = 0x08
UART_MSR_CTS = 0x10
UART_MSR_DSR = 0x20
UART_MSR_RI = 0x40
UART_MSR_DCD = 0x80
UART_MSR_ANY_DELTA = 0x0F

UART_FIFO_SIZE = 16
_TRIGGER_LEVELS = (1, 4, 8, 14)  # FCR bits 7:6
_MODEM_INPUTS_PRESENT = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS


@dataclass
class UartState:
    """All mutable UART state; LSR.DR/THRE/TEMT and IIR are derived, not stored."""

    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    fcr: int = 0
    scr: int = 0
    dll: int = 0x0C  # 9600 baud; Linux programs its own
    dlm: int = 0
    lsr_errors: int = 0  # OE/PE/FE/BI, latched until LSR is read
    msr_delta: int = 0  # DCTS/DDSR/TERI/DDCD, latched until MSR is read
    rx_fifo: list[int] = field(default_factory=list)
    rbr: int = 0  # last byte read: what an empty receiver returns again
    thr_ipending: bool = False
    irq_level: bool = False  # the level last driven onto the IRQ line


def _modem_inputs(mcr: int) -> int:
    """MSR bits 7:4 as the chip sees them: external lines, or MCR outputs in loopback."""
    if not mcr & UART_MCR_LOOP:
        return _MODEM_INPUTS_PRESENT
    msr = 0
    if mcr & UART_MCR_RTS:
        msr |= UART_MSR_CTS
    if mcr & UART_MCR_DTR:
        msr |= UART_MSR_DSR
    if mcr & UART_MCR_OUT1:
        msr |= UART_MSR_RI
    if mcr & UART_MCR_OUT2:
        msr |= UART_MSR_DCD
    return msr


class Uart16550(ByteRegisters):
    """A 16550A at offsets 0..7; ``tx`` gets each transmitted byte, ``irq`` its IRQ line."""

    windows = ((0, 8),)

    def __init__(self, irq: IrqLine, tx: Callable[[bytes], None]) -> None:
        self._irq = irq
        self._tx = tx
        self.state = UartState()

    def reset(self) -> None:
        """Power-on state (MR pin); drops the IRQ line if it was up."""
        self.state = UartState(irq_level=self.state.irq_level)
        self._update_irq()

    # -- host side -----------------------------------------------------------------------

    def _rx_capacity(self) -> int:
        return UART_FIFO_SIZE if self.state.fcr & UART_FCR_ENABLE_FIFO else 1

    def rx_room(self) -> int:
        """Bytes ``receive`` would accept now; 0 in loopback, where the RX pin is cut off."""
        s = self.state
        if s.mcr & UART_MCR_LOOP:
            return 0
        return self._rx_capacity() - len(s.rx_fifo)

    def receive(self, data: bytes) -> int:
        """Offer host input; returns how many leading bytes were taken (never overruns)."""
        n = min(len(data), self.rx_room())
        if n:
            self.state.rx_fifo.extend(data[:n])
            self._update_irq()
        return n

    # -- interrupt logic -----------------------------------------------------------------

    def _iir_id(self) -> int:
        """The highest-priority pending source, as IIR bits 3:0."""
        s = self.state
        if s.ier & UART_IER_RLSI and s.lsr_errors:
            return UART_IIR_RLSI
        if s.ier & UART_IER_RDI and s.rx_fifo:
            if s.fcr & UART_FCR_ENABLE_FIFO and len(s.rx_fifo) < self._trigger_level():
                return UART_IIR_RX_TIMEOUT
            return UART_IIR_RDI
        if s.ier & UART_IER_THRI and s.thr_ipending:
            return UART_IIR_THRI
        if s.ier & UART_IER_MSI and s.msr_delta:
            return UART_IIR_MSI
        return UART_IIR_NO_INT

    def _trigger_level(self) -> int:
        return _TRIGGER_LEVELS[(self.state.fcr & UART_FCR_TRIGGER_MASK) >> 6]

    def _update_irq(self) -> None:
        s = self.state
        level = bool(s.mcr & UART_MCR_OUT2) and self._iir_id() != UART_IIR_NO_INT
        if level != s.irq_level:
            s.irq_level = level
            self._irq.set(level)

    # -- registers -----------------------------------------------------------------------

    def read8(self, offset: int) -> int:
        s = self.state
        dlab = s.lcr & UART_LCR_DLAB
        if offset == UART_RX:
            if dlab:
                return s.dll
            if s.rx_fifo:
                s.rbr = s.rx_fifo.pop(0)
                self._update_irq()
            return s.rbr
        if offset == UART_IER:
            return s.dlm if dlab else s.ier
        if offset == UART_IIR:
            iid = self._iir_id()
            if iid == UART_IIR_THRI:
                s.thr_ipending = False  # reading IIR acknowledges a THRE interrupt
                self._update_irq()
            fifo = UART_IIR_FIFO_ENABLED if s.fcr & UART_FCR_ENABLE_FIFO else 0
            return fifo | iid
        if offset == UART_LCR:
            return s.lcr
        if offset == UART_MCR:
            return s.mcr
        if offset == UART_LSR:
            lsr = UART_LSR_THRE | UART_LSR_TEMT | s.lsr_errors
            if s.rx_fifo:
                lsr |= UART_LSR_DR
            if s.lsr_errors:
                s.lsr_errors = 0
                self._update_irq()
            return lsr
        if offset == UART_MSR:
            msr = _modem_inputs(s.mcr) | s.msr_delta
            if s.msr_delta:
                s.msr_delta = 0
                self._update_irq()
            return msr
        if offset == UART_SCR:
            return s.scr
        return 0xFF

    def write8(self, offset: int, value: int) -> None:
        s = self.state
        dlab = s.lcr & UART_LCR_DLAB
        if offset == UART_TX:
            if dlab:
                s.dll = value
            else:
                self._transmit(value)
        elif offset == UART_IER:
            if dlab:
                s.dlm = value
            else:
                old = s.ier
                s.ier = value & 0x0F
                if (old ^ s.ier) & UART_IER_THRI:
                    # Enabling THRI while THR is empty raises it at once (Linux's THRE test
                    # and Windows rely on this); disabling forgets it.
                    s.thr_ipending = bool(s.ier & UART_IER_THRI)
                self._update_irq()
        elif offset == UART_FCR:
            self._write_fcr(value)
        elif offset == UART_LCR:
            s.lcr = value
        elif offset == UART_MCR:
            old_in = _modem_inputs(s.mcr)
            s.mcr = value & 0x1F
            new_in = _modem_inputs(s.mcr)
            changed = old_in ^ new_in
            if changed & UART_MSR_CTS:
                s.msr_delta |= UART_MSR_DCTS
            if changed & UART_MSR_DSR:
                s.msr_delta |= UART_MSR_DDSR
            if changed & UART_MSR_DCD:
                s.msr_delta |= UART_MSR_DDCD
            if old_in & UART_MSR_RI and not new_in & UART_MSR_RI:
                s.msr_delta |= UART_MSR_TERI
            self._update_irq()
        elif offset == UART_SCR:
            s.scr = value
        # LSR and MSR are read-only (factory test writes are not modelled).

    def _transmit(self, byte: int) -> None:
        s = self.state
        s.thr_ipending = False
        self._update_irq()
        if s.mcr & UART_MCR_LOOP:
            self._loopback_receive(byte)
        else:
            self._tx(bytes((byte,)))
        s.thr_ipending = True  # THR empty again: the byte left at once
        self._update_irq()

    def _loopback_receive(self, byte: int) -> None:
        s = self.state
        if len(s.rx_fifo) < self._rx_capacity():
            s.rx_fifo.append(byte)
        else:
            s.lsr_errors |= UART_LSR_OE
            if not s.fcr & UART_FCR_ENABLE_FIFO:
                s.rx_fifo[0] = byte  # the holding register is overwritten; a FIFO keeps its
                # contents and loses the new character

    def _write_fcr(self, value: int) -> None:
        s = self.state
        if (value ^ s.fcr) & UART_FCR_ENABLE_FIFO:
            value |= UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT  # mode switch flushes both
        if value & UART_FCR_CLEAR_RCVR:
            s.rx_fifo.clear()
        if value & UART_FCR_CLEAR_XMIT:
            s.thr_ipending = True
        # The other bits only program when ENABLE_FIFO is written as 1 alongside them.
        mask = UART_FCR_ENABLE_FIFO | UART_FCR_DMA_SELECT | UART_FCR_TRIGGER_MASK
        s.fcr = value & mask if value & UART_FCR_ENABLE_FIFO else 0
        self._update_irq()
