"""i8042 keyboard controller with no keyboard and no mouse attached (ports 0x60 and 0x64).

It exists for two reasons: the PC reset line (command 0xfe, or an output-port write with
bit 0 clear, calls ``on_reset``), and so that Linux's i8042 driver finds a working controller
and no devices instead of hanging.  Controller commands answer at once through the output
buffer (polled by Linux).  Bytes for the keyboard (a data write not preceded by a controller
command) or the mouse (0xd4) go nowhere: the status register's timeout bit is set, no reply
is queued, and the PS/2 drivers time out cleanly.

The AUX loopback command 0xd3 echoes its byte as mouse data, so Linux's AUX port check
passes its loop test.  Its next step waits up to 250 ms for IRQ 12; wiring ``irq12`` (and
``irq1``) lets that test pass at once, otherwise the driver gives up on the AUX port after the
wait.  The IRQ outputs follow the output buffer as on the chip: IRQ 1 for keyboard data when
the command byte enables it, IRQ 12 for AUX data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.isa import ByteRegisters

__all__ = ["I8042", "I8042State"]

I8042_DATA_OFFSET = 0  # port 0x60
I8042_COMMAND_OFFSET = 4  # port 0x64 (status on read)

# Status register (drivers/input/serio/i8042.h).
I8042_STR_PARITY = 0x80
I8042_STR_TIMEOUT = 0x40
I8042_STR_AUXDATA = 0x20
I8042_STR_KEYLOCK = 0x10  # 1 = keyboard not inhibited
I8042_STR_CMDDAT = 0x08  # last write was a command
I8042_STR_MUXERR = 0x04
I8042_STR_SYSFLAG = 0x04
I8042_STR_IBF = 0x02
I8042_STR_OBF = 0x01

# Command byte ("CTR").
I8042_CTR_KBDINT = 0x01
I8042_CTR_AUXINT = 0x02
I8042_CTR_SYSFLAG = 0x04
I8042_CTR_IGNKEYLOCK = 0x08
I8042_CTR_KBDDIS = 0x10
I8042_CTR_AUXDIS = 0x20
I8042_CTR_XLATE = 0x40

# Controller commands.
I8042_CMD_CTL_RCTR = 0x20
I8042_CMD_CTL_WCTR = 0x60
I8042_CMD_AUX_DISABLE = 0xA7
I8042_CMD_AUX_ENABLE = 0xA8
I8042_CMD_AUX_TEST = 0xA9
I8042_CMD_CTL_TEST = 0xAA
I8042_CMD_KBD_TEST = 0xAB
I8042_CMD_KBD_DISABLE = 0xAD
I8042_CMD_KBD_ENABLE = 0xAE
I8042_CMD_READ_INPUT = 0xC0
I8042_CMD_READ_OUTPUT = 0xD0
I8042_CMD_WRITE_OUTPUT = 0xD1
I8042_CMD_KBD_LOOP = 0xD2
I8042_CMD_AUX_LOOP = 0xD3
I8042_CMD_AUX_SEND = 0xD4
I8042_CMD_DISABLE_A20 = 0xDD
I8042_CMD_ENABLE_A20 = 0xDF
I8042_CMD_READ_TEST = 0xE0
I8042_CMD_PULSE_BASE = 0xF0  # 0xf0-0xff pulse output-port bits 0-3 low; bit 0 is reset

I8042_RET_CTL_TEST = 0x55
I8042_RET_PORT_OK = 0x00

# Output port.
I8042_OUT_RESET = 0x01  # 0 = hold the CPU in reset
I8042_OUT_A20 = 0x02
I8042_OUT_OBF = 0x10
I8042_OUT_AUX_OBF = 0x20
I8042_OUT_DEFAULT = 0xCF  # reset and A20 high, unused lines pulled up (as QEMU)

_AUX = 0x100  # marks AUX bytes in the output queue
_QUEUE_LIMIT = 16
_DATA_COMMANDS = frozenset(
    {
        I8042_CMD_CTL_WCTR,
        I8042_CMD_WRITE_OUTPUT,
        I8042_CMD_KBD_LOOP,
        I8042_CMD_AUX_LOOP,
        I8042_CMD_AUX_SEND,
    }
)


@dataclass
class I8042State:
    ctr: int = I8042_CTR_KBDINT | I8042_CTR_AUXINT
    outport: int = I8042_OUT_DEFAULT
    pending_cmd: int = 0  # a command waiting for its data byte on port 0x60, or 0
    out_queue: list[int] = field(default_factory=list)  # bytes for the CPU; bit 8 = AUX
    last_data: int = 0  # what port 0x60 reads when the buffer is empty
    sys_flag: bool = False
    cmd_last: bool = True
    timeout: bool = False
    irq1_level: bool = False
    irq12_level: bool = False


class I8042(ByteRegisters):
    """The controller at offsets 0 (0x60 data) and 4 (0x64 status/command)."""

    windows = ((0, 1), (4, 5))

    def __init__(
        self,
        on_reset: Callable[[], None],
        irq1: IrqLine | None = None,
        irq12: IrqLine | None = None,
    ) -> None:
        self._on_reset = on_reset
        self._irq1 = irq1
        self._irq12 = irq12
        self.state = I8042State()

    def reset(self) -> None:
        self.state = I8042State(
            irq1_level=self.state.irq1_level, irq12_level=self.state.irq12_level
        )
        self._update_irq()

    def status(self) -> int:
        s = self.state
        value = I8042_STR_KEYLOCK
        if s.out_queue:
            value |= I8042_STR_OBF
            if s.out_queue[0] & _AUX:
                value |= I8042_STR_AUXDATA
        if s.sys_flag:
            value |= I8042_STR_SYSFLAG
        if s.cmd_last:
            value |= I8042_STR_CMDDAT
        if s.timeout:
            value |= I8042_STR_TIMEOUT
        return value

    def _queue(self, byte: int) -> None:
        if len(self.state.out_queue) < _QUEUE_LIMIT:
            self.state.out_queue.append(byte)

    def _update_irq(self) -> None:
        s = self.state
        kbd = aux = False
        if s.out_queue:
            if s.out_queue[0] & _AUX:
                aux = bool(s.ctr & I8042_CTR_AUXINT)
            else:
                kbd = bool(s.ctr & I8042_CTR_KBDINT) and not s.ctr & I8042_CTR_KBDDIS
        if kbd != s.irq1_level:
            s.irq1_level = kbd
            if self._irq1 is not None:
                self._irq1.set(kbd)
        if aux != s.irq12_level:
            s.irq12_level = aux
            if self._irq12 is not None:
                self._irq12.set(aux)

    def read8(self, offset: int) -> int:
        if offset == I8042_COMMAND_OFFSET:
            return self.status()
        s = self.state
        if s.out_queue:
            s.last_data = s.out_queue.pop(0) & 0xFF
            self._update_irq()
        return s.last_data

    def write8(self, offset: int, value: int) -> None:
        s = self.state
        s.timeout = False
        if offset == I8042_COMMAND_OFFSET:
            s.cmd_last = True
            s.pending_cmd = 0
            self._command(value)
        else:
            s.cmd_last = False
            cmd, s.pending_cmd = s.pending_cmd, 0
            self._data(cmd, value)
        self._update_irq()

    def _command(self, cmd: int) -> None:
        s = self.state
        if cmd in _DATA_COMMANDS:
            s.pending_cmd = cmd
        elif cmd == I8042_CMD_CTL_RCTR:
            self._queue(s.ctr)
        elif cmd == I8042_CMD_AUX_DISABLE:
            s.ctr |= I8042_CTR_AUXDIS
        elif cmd == I8042_CMD_AUX_ENABLE:
            s.ctr &= ~I8042_CTR_AUXDIS
        elif cmd in (I8042_CMD_AUX_TEST, I8042_CMD_KBD_TEST):
            self._queue(I8042_RET_PORT_OK)
        elif cmd == I8042_CMD_CTL_TEST:
            s.sys_flag = True
            self._queue(I8042_RET_CTL_TEST)
        elif cmd == I8042_CMD_KBD_DISABLE:
            s.ctr |= I8042_CTR_KBDDIS
        elif cmd == I8042_CMD_KBD_ENABLE:
            s.ctr &= ~I8042_CTR_KBDDIS
        elif cmd in (I8042_CMD_READ_INPUT, I8042_CMD_READ_TEST):
            self._queue(0x00)
        elif cmd == I8042_CMD_READ_OUTPUT:
            port = s.outport & ~(I8042_OUT_OBF | I8042_OUT_AUX_OBF)
            if s.out_queue:
                port |= I8042_OUT_AUX_OBF if s.out_queue[0] & _AUX else I8042_OUT_OBF
            self._queue(port)
        elif cmd == I8042_CMD_DISABLE_A20:
            s.outport &= ~I8042_OUT_A20
        elif cmd == I8042_CMD_ENABLE_A20:
            s.outport |= I8042_OUT_A20
        elif cmd >= I8042_CMD_PULSE_BASE and not cmd & I8042_OUT_RESET:
            self._on_reset()
        # Anything else (controller RAM reads, vendor commands) is ignored.

    def _data(self, cmd: int, value: int) -> None:
        s = self.state
        if cmd == I8042_CMD_CTL_WCTR:
            s.ctr = value
            s.sys_flag = bool(value & I8042_CTR_SYSFLAG)
        elif cmd == I8042_CMD_WRITE_OUTPUT:
            s.outport = value
            if not value & I8042_OUT_RESET:
                self._on_reset()
        elif cmd == I8042_CMD_KBD_LOOP:
            self._queue(value)
        elif cmd == I8042_CMD_AUX_LOOP:
            self._queue(value | _AUX)
        else:
            s.timeout = True  # to the keyboard (cmd 0) or the mouse (0xd4): nobody answers
