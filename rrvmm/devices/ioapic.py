"""I/O APIC (82093AA-style, version 0x20 with an EOI register) at 0xfec00000.

The guest reaches 24 redirection entries and the ID/version/arbitration registers through
the indirect pair IOREGSEL (offset 0x00) / IOWIN (offset 0x10); version 0x20 adds the EOI
register at 0x40 that directed EOI (a local APIC with SVR bit 12 set) uses instead of the
broadcast.  Behaviour follows the 82093AA datasheet with KVM's ioapic where it is silent:
- Inputs are in asserted-sense (``set_irq(pin, True)`` = the source requests service), as
  every rrvmm device drives its line; the polarity bit is stored for the guest to read back,
  and the machine describes the wiring in the MADT.
- Edge pins: a rising request while unmasked is sent once; one while masked is lost.
- Level pins: an asserted unmasked pin is sent and sets remote IRR; it is not sent again
  until an EOI for its vector clears remote IRR, and then it is re-sent if still asserted
  (or when unmasked while asserted).
- Delivery status always reads idle: a message goes to the local APIC(s) at once.
- A register index beyond the 24 entries reads all ones and ignores writes, logged once.
Output: every message goes to ``deliver(ApicMessage)``; the machine routes it to the
local APIC(s) that ``LocalApic.matches`` the destination.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ApicMessage", "IOAPIC_DEFAULT_BASE", "IOAPIC_PINS", "IoApic", "IoApicState"]

log = logging.getLogger("rrvmm")

IOAPIC_DEFAULT_BASE = 0xFEC00000
IOAPIC_MMIO_SIZE = 0x1000
IOAPIC_PINS = 24
IOAPIC_VERSION = 0x20

REG_SELECT = 0x00
REG_WINDOW = 0x10
REG_EOI = 0x40

INDEX_ID = 0x00
INDEX_VERSION = 0x01
INDEX_ARBITRATION = 0x02
INDEX_REDIRECTION = 0x10

ENTRY_DELIVERY_STATUS = 1 << 12
ENTRY_POLARITY_LOW = 1 << 13
ENTRY_REMOTE_IRR = 1 << 14
ENTRY_LEVEL = 1 << 15
ENTRY_MASKED = 1 << 16
ENTRY_LOGICAL = 1 << 11
_ENTRY_READ_ONLY = ENTRY_DELIVERY_STATUS | ENTRY_REMOTE_IRR
_ENTRY_WRITABLE_LOW = 0x1FFFF & ~_ENTRY_READ_ONLY
_ENTRY_WRITABLE_HIGH = 0xFF000000  # destination, bits 63:56


@dataclass(frozen=True)
class ApicMessage:
    """An interrupt message on the APIC bus (from the I/O APIC here; MSIs look the same)."""

    vector: int
    dest: int
    logical: bool
    delivery_mode: int
    trigger_level: bool


def _reset_entries() -> list[int]:
    return [ENTRY_MASKED] * IOAPIC_PINS


@dataclass
class IoApicState:
    id: int = 0
    select: int = 0
    entries: list[int] = field(default_factory=_reset_entries)  # 64-bit redirection entries
    asserted: int = 0  # pins whose source requests service (bit per pin)


class IoApic:
    """24-pin I/O APIC; ``set_irq`` is its input side, ``deliver`` its output."""

    def __init__(self, deliver: Callable[[ApicMessage], None], ioapic_id: int = 0) -> None:
        self._deliver = deliver
        self._initial_id = ioapic_id & 0xF
        self._logged: set[str] = set()
        self.state = IoApicState(id=self._initial_id)

    def reset(self) -> None:
        self.state = IoApicState(id=self._initial_id)

    # -- inputs ----------------------------------------------------------------------------

    def set_irq(self, pin: int, asserted: bool) -> None:
        """Drive input ``pin`` (a GSI, 0..23); usable as an ``IrqLine`` sink."""
        if not 0 <= pin < IOAPIC_PINS:
            raise ValueError(f"I/O APIC pin {pin} out of range (0-{IOAPIC_PINS - 1})")
        s = self.state
        mask = 1 << pin
        was = bool(s.asserted & mask)
        if asserted:
            s.asserted |= mask
        else:
            s.asserted &= ~mask
        entry = s.entries[pin]
        if entry & ENTRY_LEVEL:
            if asserted:
                self._service(pin)
        elif asserted and not was and not entry & ENTRY_MASKED:
            self._send(pin)

    def eoi(self, vector: int) -> None:
        """An EOI for ``vector`` (the local APIC's broadcast, or a write to REG_EOI)."""
        s = self.state
        for pin, entry in enumerate(s.entries):
            if entry & 0xFF == vector and entry & ENTRY_LEVEL and entry & ENTRY_REMOTE_IRR:
                s.entries[pin] = entry & ~ENTRY_REMOTE_IRR
                self._service(pin)

    def _service(self, pin: int) -> None:
        """Send a level pin if it is asserted, unmasked and not waiting for its EOI."""
        s = self.state
        entry = s.entries[pin]
        if not s.asserted >> pin & 1 or entry & (ENTRY_MASKED | ENTRY_REMOTE_IRR):
            return
        s.entries[pin] = entry | ENTRY_REMOTE_IRR
        self._send(pin)

    def _send(self, pin: int) -> None:
        entry = self.state.entries[pin]
        self._deliver(
            ApicMessage(
                vector=entry & 0xFF,
                dest=entry >> 56,
                logical=bool(entry & ENTRY_LOGICAL),
                delivery_mode=(entry >> 8) & 7,
                trigger_level=bool(entry & ENTRY_LEVEL),
            )
        )

    # -- registers -------------------------------------------------------------------------

    def _read_indirect(self, index: int) -> int:
        s = self.state
        if index == INDEX_ID:
            return s.id << 24
        if index == INDEX_VERSION:
            return IOAPIC_VERSION | ((IOAPIC_PINS - 1) << 16)
        if index == INDEX_ARBITRATION:
            return s.id << 24  # loaded from the ID (82093AA 3.2.3)
        pin = (index - INDEX_REDIRECTION) >> 1
        if index < INDEX_REDIRECTION or pin >= IOAPIC_PINS:
            self._log_once(f"r{index}", f"I/O APIC read of register {index:#x} out of range")
            return 0xFFFFFFFF
        entry = s.entries[pin]
        return entry >> 32 if index & 1 else entry & 0xFFFFFFFF

    def _write_indirect(self, index: int, value: int) -> None:
        s = self.state
        if index == INDEX_ID:
            s.id = (value >> 24) & 0xF
            return
        if index in (INDEX_VERSION, INDEX_ARBITRATION):
            return  # read-only
        pin = (index - INDEX_REDIRECTION) >> 1
        if index < INDEX_REDIRECTION or pin >= IOAPIC_PINS:
            self._log_once(f"w{index}", f"I/O APIC write to register {index:#x} ignored")
            return
        entry = s.entries[pin]
        if index & 1:
            entry = (entry & 0xFFFFFFFF) | ((value & _ENTRY_WRITABLE_HIGH) << 32)
        else:
            entry = (entry & ~_ENTRY_WRITABLE_LOW) | (value & _ENTRY_WRITABLE_LOW)
            if not entry & ENTRY_LEVEL:
                entry &= ~ENTRY_REMOTE_IRR  # remote IRR is undefined for edge: keep it clear
            mode = (entry >> 8) & 7
            if mode in (3, 6):
                self._log_once(f"mode{pin}", f"I/O APIC pin {pin} reserved delivery mode {mode}")
        s.entries[pin] = entry
        if entry & ENTRY_LEVEL:
            self._service(pin)  # unmasking an asserted level pin sends it

    def mmio_read(self, offset: int, size: int) -> int:
        s = self.state
        if offset == REG_SELECT and size in (1, 4):
            return s.select
        if offset == REG_WINDOW and size == 4:
            return self._read_indirect(s.select)
        self._log_once(f"mr{offset}:{size}", f"I/O APIC read of {size} at {offset:#x} reads 0")
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        s = self.state
        if offset == REG_SELECT and size in (1, 4):
            s.select = value & 0xFF
        elif offset == REG_WINDOW and size == 4:
            self._write_indirect(s.select, value & 0xFFFFFFFF)
        elif offset == REG_EOI and size == 4:
            self.eoi(value & 0xFF)
        else:
            self._log_once(f"mw{offset}:{size}", f"I/O APIC write of {size} at {offset:#x} ignored")

    def pio_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def pio_write(self, offset: int, size: int, value: int) -> None:
        return None

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)
