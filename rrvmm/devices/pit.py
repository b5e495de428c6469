"""Intel 8254 PIT (ports 0x40-0x43, channel 0 on IRQ 0) and system control port B (0x61).

Counting is never simulated tick by tick: each channel remembers the absolute PIT tick at
which its counting element was loaded, and a counter value or OUT level is computed from
``clock.now_ns()`` when the guest reads it.  Ticks are edges of a free-running 1.193182 MHz
clock counted from time 0 (``tick = ns * 1193182 // 10**9``), so no rounding drift builds up
and two reads at the same nanosecond always agree.  The clock is read only while handling a
guest access that needs the time (a counter/status read, port 0x61 read, or a write that
starts, stops or reprograms a counting channel), or in ``update`` — never on a thread.

IRQ 0 is driven as pulses, one per rising edge of OUT0, by ``update(now_ns)``.  When several
edges have passed since the previous update only one pulse is sent: like a coalesced timer
interrupt, the guest sees one late tick rather than a burst.  Reprogramming channel 0 first
catches up with the current time, so an edge due before the write is delivered (late) rather
than lost.  Only period/terminal-count edges count; the OUT0 level change a control-word
write itself can cause is not an interrupt source here.

Deviations from the datasheet, all harmless to Linux and documented here on purpose:
- A count takes effect at the write instant, not at the next CLK edge (<= 838 ns later).
- BCD counting (control word bit 0) is accepted and reported in the status byte but the
  counter counts in binary.
- Modes 2 and 3 treat the illegal count 1 as 2.
- Reading port 0x43 (write-only) returns 0xff.
- Port 0x61 bit 4 (refresh) toggles on every read rather than every 15 us, deterministically.
- Channels start stopped (no BIOS ran): nothing ticks until the guest programs a channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrvmm.devices.bus import Clock, IrqLine
from rrvmm.devices.isa import ByteRegisters

__all__ = [
    "PIT_HZ",
    "Pit8254",
    "PitChannelState",
    "PitState",
    "Port61",
    "Port61State",
    "ns_to_ticks",
    "ticks_to_ns",
]

PIT_HZ = 1_193_182
_NS_PER_S = 1_000_000_000

# Control word fields (8254 datasheet).
PIT_SC_READBACK = 3
PIT_ACCESS_LATCH = 0
PIT_ACCESS_LOBYTE = 1
PIT_ACCESS_HIBYTE = 2
PIT_ACCESS_LOHI = 3
PIT_RB_NO_COUNT = 0x20  # read-back: 0 = latch count
PIT_RB_NO_STATUS = 0x10  # read-back: 0 = latch status
PIT_STATUS_OUT = 0x80
PIT_STATUS_NULL_COUNT = 0x40

# System control port B (0x61).
PORT61_GATE2 = 0x01
PORT61_SPEAKER_DATA = 0x02
PORT61_WRITABLE = 0x0E  # speaker data, parity-check and channel-check enables
PORT61_REFRESH = 0x10
PORT61_OUT2 = 0x20


def ns_to_ticks(ns: int) -> int:
    """PIT clock edges in ``[0, ns]``."""
    return ns * PIT_HZ // _NS_PER_S


def ticks_to_ns(ticks: int) -> int:
    """The first nanosecond at which ``ns_to_ticks`` reaches ``ticks``."""
    return -((-ticks * _NS_PER_S) // PIT_HZ)


@dataclass
class PitChannelState:
    """One counter.  ``cr`` is the count register, ``n`` the count the element runs with."""

    mode: int = 0
    access: int = PIT_ACCESS_LOHI
    bcd: bool = False
    gate: bool = True
    cr: int = 0  # 0 means 0x10000
    n: int = 0
    loaded: bool = False  # a complete count was written since the control word
    running: bool = False
    start_tick: int = 0  # absolute tick at which elapsed = 0
    paused_elapsed: int = -1  # >= 0: mode 0/4 held by a low gate after this many ticks
    hold_value: int = 0  # counting element while stopped
    pending: bool = False  # modes 2/3: cr takes over at pending_tick
    pending_tick: int = 0
    pending_start: int = 0
    null_count: bool = True
    write_hi_next: bool = False
    write_lo: int = 0
    read_hi_next: bool = False
    latch: list[int] = field(default_factory=list)  # latched count bytes still to read
    status_latch: int = -1


def _default_channels() -> list[PitChannelState]:
    # Gates 0 and 1 are tied high on a PC; gate 2 comes from port 0x61, which starts at 0.
    return [PitChannelState(), PitChannelState(), PitChannelState(gate=False)]


@dataclass
class PitState:
    channels: list[PitChannelState] = field(default_factory=_default_channels)
    irq_tick: int = 0  # IRQ 0 edges up to this tick have been delivered
    port61: int = 0  # port 0x61 bits 1..3 as written
    refresh: bool = False


@dataclass
class Port61State:
    """Empty on purpose: port 0x61's state is part of ``PitState``."""


def _calc(mode: int, n: int, e: int) -> tuple[int, bool]:
    """Counting element value and OUT, ``e`` ticks after loading count ``n`` in ``mode``."""
    count = n or 0x10000
    if mode in (0, 1):
        return (count - e) & 0xFFFF, e >= count
    if mode in (4, 5):
        return (count - e) & 0xFFFF, e != count
    count = max(count, 2)
    r = e % count
    if mode == 2:
        return (count - r) & 0xFFFF, r != count - 1
    # Mode 3: OUT high for ceil(N/2) ticks, low for floor(N/2); the element steps by 2.
    # An odd count steps by 1 (high half) or 3 (low half) once after each reload.
    high = (count + 1) // 2
    odd = count & 1
    if r < high:
        value = count + 1 - 2 * r if odd and r else count - 2 * r
        return value & 0xFFFF, True
    j = r - high
    value = count - 1 - 2 * j if odd and j else count - 2 * j
    return value & 0xFFFF, False


def _rel_edge(mode: int, n: int, e0: int) -> int | None:
    """Elapsed tick of the first rising edge of OUT after ``e0`` (>= 0), or None."""
    count = n or 0x10000
    if mode in (0, 1):
        return count if e0 < count else None
    if mode in (4, 5):
        return count + 1 if e0 < count + 1 else None
    count = max(count, 2)
    return (e0 // count + 1) * count


def _settle(ch: PitChannelState, tick: int) -> None:
    """Apply a deferred mode 2/3 reload once its time has come."""
    if ch.pending and tick >= ch.pending_tick:
        ch.n = ch.cr
        ch.start_tick = ch.pending_start
        ch.pending = False
        ch.null_count = False


def _read(ch: PitChannelState, tick: int) -> tuple[int, bool]:
    """Counter value and OUT at ``tick`` (``tick`` is only used while running)."""
    if ch.running:
        _settle(ch, tick)
        return _calc(ch.mode, ch.n, max(tick - ch.start_tick, 0))
    if ch.paused_elapsed >= 0:
        return _calc(ch.mode, ch.n, ch.paused_elapsed)
    return ch.hold_value, ch.mode != 0  # OUT after a control word: low in mode 0 only


def _next_edge(ch: PitChannelState, after: int) -> int | None:
    """Absolute tick of the first rising edge of OUT after tick ``after``."""
    if not ch.running:
        return None
    _settle(ch, after)
    rel = _rel_edge(ch.mode, ch.n, max(after - ch.start_tick, 0))
    edge = None if rel is None else ch.start_tick + rel
    if ch.pending and (edge is None or edge > ch.pending_tick):
        rel = _rel_edge(ch.mode, ch.cr, max(after, ch.pending_tick) - ch.pending_start)
        edge = None if rel is None else ch.pending_start + rel
    return edge


def _status(ch: PitChannelState, out: bool) -> int:
    status = (ch.access << 4) | (ch.mode << 1) | int(ch.bcd)
    if out:
        status |= PIT_STATUS_OUT
    if ch.null_count:
        status |= PIT_STATUS_NULL_COUNT
    return status


def _latch_bytes(ch: PitChannelState, value: int) -> list[int]:
    if ch.access == PIT_ACCESS_LOBYTE:
        return [value & 0xFF]
    if ch.access == PIT_ACCESS_HIBYTE:
        return [value >> 8]
    return [value & 0xFF, value >> 8]


class Pit8254(ByteRegisters):
    """Three 8254 counters at offsets 0..3; ``port61`` is the device for port 0x61."""

    windows = ((0, 4),)

    def __init__(self, clock: Clock, irq0: IrqLine) -> None:
        self._clock = clock
        self._irq0 = irq0
        self.state = PitState()
        self.port61 = Port61(self)

    def reset(self) -> None:
        self.state = PitState()

    def _now(self) -> int:
        return ns_to_ticks(self._clock.now_ns())

    # -- IRQ 0 -----------------------------------------------------------------------------

    def update(self, now_ns: int) -> None:
        """Pulse IRQ 0 once if OUT0 had any rising edge since the previous update."""
        self._advance(ns_to_ticks(now_ns))

    def _advance(self, now: int) -> None:
        s = self.state
        if now <= s.irq_tick:
            return
        edge = _next_edge(s.channels[0], s.irq_tick)
        s.irq_tick = now
        if edge is not None and edge <= now:
            self._irq0.pulse()

    def next_deadline_ns(self) -> int | None:
        """When ``update`` would next pulse IRQ 0; None if channel 0 will not fire again."""
        edge = _next_edge(self.state.channels[0], self.state.irq_tick)
        return None if edge is None else ticks_to_ns(edge)

    # -- ports 0x40-0x43 ----------------------------------------------------------------

    def read8(self, offset: int) -> int:
        if offset == 3:
            return 0xFF
        ch = self.state.channels[offset]
        if ch.status_latch >= 0:
            value = ch.status_latch
            ch.status_latch = -1
            return value
        if ch.latch:
            return ch.latch.pop(0)
        value, _ = _read(ch, self._now() if ch.running else 0)
        if ch.access == PIT_ACCESS_LOBYTE:
            return value & 0xFF
        if ch.access == PIT_ACCESS_HIBYTE:
            return value >> 8
        high = ch.read_hi_next
        ch.read_hi_next = not high
        return value >> 8 if high else value & 0xFF

    def write8(self, offset: int, value: int) -> None:
        if offset == 3:
            self._write_control(value)
            return
        ch = self.state.channels[offset]
        if ch.access == PIT_ACCESS_LOBYTE:
            self._load(offset, value)
        elif ch.access == PIT_ACCESS_HIBYTE:
            self._load(offset, value << 8)
        elif not ch.write_hi_next:
            ch.write_lo = value
            ch.write_hi_next = True
            if ch.mode == 0:
                self._stop(offset)  # mode 0: the first byte stops counting, OUT goes low
        else:
            ch.write_hi_next = False
            self._load(offset, ch.write_lo | (value << 8))

    def _tick_for(self, index: int) -> int:
        """The current tick, after delivering any IRQ 0 edge that reprogramming would lose."""
        now = self._now()
        if index == 0:
            self._advance(now)
        return now

    def _stop(self, index: int) -> None:
        """Back to the just-after-control-word state, holding the current count."""
        ch = self.state.channels[index]
        tick = self._tick_for(index) if ch.running else 0
        ch.hold_value, _ = _read(ch, tick)
        ch.running = False
        ch.loaded = False
        ch.paused_elapsed = -1
        ch.pending = False

    def _write_control(self, value: int) -> None:
        select = value >> 6
        if select == PIT_SC_READBACK:
            self._read_back(value)
            return
        ch = self.state.channels[select]
        access = (value >> 4) & 3
        if access == PIT_ACCESS_LATCH:
            if not ch.latch:  # a second latch before reading is ignored
                count, _ = _read(ch, self._now() if ch.running else 0)
                ch.latch = _latch_bytes(ch, count)
            return
        self._stop(select)
        mode = (value >> 1) & 7
        ch.mode = mode - 4 if mode > 5 else mode
        ch.access = access
        ch.bcd = bool(value & 1)
        ch.null_count = True
        ch.write_hi_next = False
        ch.read_hi_next = False

    def _read_back(self, value: int) -> None:
        tick: int | None = None
        for index, ch in enumerate(self.state.channels):
            if not value & (2 << index):
                continue
            if ch.running and tick is None:
                tick = self._now()
            count, out = _read(ch, tick or 0)
            if not value & PIT_RB_NO_COUNT and not ch.latch:
                ch.latch = _latch_bytes(ch, count)
            if not value & PIT_RB_NO_STATUS and ch.status_latch < 0:
                ch.status_latch = _status(ch, out)

    def _load(self, index: int, count: int) -> None:
        ch = self.state.channels[index]
        ch.cr = count
        ch.loaded = True
        if ch.mode in (1, 5):
            return  # waits for a rising edge on the gate
        tick = self._tick_for(index)
        if ch.mode in (0, 4):
            ch.n = count
            ch.null_count = False
            ch.pending = False
            if ch.gate:
                ch.running = True
                ch.start_tick = tick
                ch.paused_elapsed = -1
            else:
                ch.running = False
                ch.paused_elapsed = 0
            return
        # Modes 2 and 3: a running counter finishes its current period (mode 2) or
        # half-period (mode 3) before the new count takes over.
        if ch.running:
            self._defer_reload(ch, tick)
        elif ch.gate:
            self._start(ch, tick)

    @staticmethod
    def _start(ch: PitChannelState, tick: int) -> None:
        ch.n = ch.cr
        ch.start_tick = tick
        ch.running = True
        ch.pending = False
        ch.paused_elapsed = -1
        ch.null_count = False

    @staticmethod
    def _defer_reload(ch: PitChannelState, tick: int) -> None:
        _settle(ch, tick)
        period = max(ch.n or 0x10000, 2)
        r = (tick - ch.start_tick) % period
        period_start = tick - r
        if ch.mode == 2:
            ch.pending_tick = ch.pending_start = period_start + period
        elif r < (period + 1) // 2:  # high half: the new count starts with its low half
            ch.pending_tick = period_start + (period + 1) // 2
            new_period = max(ch.cr or 0x10000, 2)
            ch.pending_start = ch.pending_tick - (new_period + 1) // 2
        else:
            ch.pending_tick = ch.pending_start = period_start + period
        ch.pending = True
        ch.null_count = True

    def _set_gate(self, index: int, level: bool) -> None:
        ch = self.state.channels[index]
        if level == ch.gate:
            return
        tick = self._now() if ch.running or level else 0
        _settle(ch, tick)
        ch.gate = level
        if ch.mode in (0, 4):
            if not level and ch.running:
                ch.paused_elapsed = max(tick - ch.start_tick, 0)
                ch.running = False
            elif level and ch.paused_elapsed >= 0:
                ch.start_tick = tick - ch.paused_elapsed
                ch.paused_elapsed = -1
                ch.running = True
        elif ch.mode in (2, 3):
            if not level and ch.running:
                ch.hold_value, _ = _read(ch, tick)
                ch.running = False  # OUT goes high and counting stops
                ch.pending = False
            elif level and ch.loaded:
                self._start(ch, tick)  # a rising gate reloads the count
        elif level and ch.loaded:  # modes 1, 5: a rising gate triggers
            self._start(ch, tick)

    # -- port 0x61 ----------------------------------------------------------------------

    def port61_read(self) -> int:
        s = self.state
        ch2 = s.channels[2]
        _, out2 = _read(ch2, self._now() if ch2.running else 0)
        s.refresh = not s.refresh
        value = s.port61
        if ch2.gate:
            value |= PORT61_GATE2
        if s.refresh:
            value |= PORT61_REFRESH
        if out2:
            value |= PORT61_OUT2
        return value

    def port61_write(self, value: int) -> None:
        self.state.port61 = value & PORT61_WRITABLE
        self._set_gate(2, bool(value & PORT61_GATE2))


class Port61(ByteRegisters):
    """System control port B at 0x61 (offset 0): gate 2, speaker, refresh toggle, OUT2.

    Its state lives in the owning ``Pit8254``'s ``PitState`` so one snapshot covers both;
    ``state`` here is an empty dataclass only so generic snapshot code can treat it as a device.
    """

    windows = ((0, 1),)

    def __init__(self, pit: Pit8254) -> None:
        self._pit = pit
        self.state = Port61State()

    def read8(self, offset: int) -> int:
        return self._pit.port61_read()

    def write8(self, offset: int, value: int) -> None:
        self._pit.port61_write(value)
