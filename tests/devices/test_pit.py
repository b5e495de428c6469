"""8254 PIT and port 0x61: counting from a fake clock, IRQ 0 edges, Linux's TSC calibration."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.pit import PIT_HZ, Pit8254, ns_to_ticks, ticks_to_ns

if TYPE_CHECKING:
    from conftest import FakeClock, IrqLog, Ports

CH0, CH1, CH2, MODE, PORTB = 0x40, 0x41, 0x42, 0x43, 0x61


class Rig:
    def __init__(self, ports: Ports, clock: FakeClock, irqlog: IrqLog) -> None:
        self.pit = Pit8254(clock, IrqLine(0, irqlog))
        ports.bus.insert(self.pit, 0x40, 4)
        ports.bus.insert(self.pit.port61, PORTB, 1)
        self.clock = clock
        self.irqlog = irqlog
        self.inb = ports.inb
        self.outb = ports.outb

    def at(self, tick: int) -> None:
        self.clock.t = ticks_to_ns(tick)

    def program(self, channel: int, control: int, count: int) -> None:
        self.outb(MODE, control)
        self.outb(CH0 + channel, count & 0xFF)
        self.outb(CH0 + channel, count >> 8)

    def read_back(self, channel: int) -> tuple[int, int]:
        """(status, count) through the read-back command."""
        self.outb(MODE, 0xC0 | (2 << channel))
        status = self.inb(CH0 + channel)
        lo = self.inb(CH0 + channel)
        hi = self.inb(CH0 + channel)
        return status, lo | (hi << 8)

    @property
    def pulses(self) -> int:
        return self.irqlog.rising(0)


@pytest.fixture
def rig(ports: Ports, clock: FakeClock, irqlog: IrqLog) -> Rig:
    return Rig(ports, clock, irqlog)


def test_tick_conversion_is_exact() -> None:
    assert ns_to_ticks(1_000_000_000) == PIT_HZ
    for tick in (0, 1, 2, 1193, 65536, 10**9):
        ns = ticks_to_ns(tick)
        assert ns_to_ticks(ns) == tick
        if tick:
            assert ns_to_ticks(ns - 1) == tick - 1


def test_idle_pit_has_no_deadline(rig: Rig) -> None:
    assert rig.pit.next_deadline_ns() is None
    rig.pit.update(10**12)
    assert rig.pulses == 0


def test_mode2_periodic_edges(rig: Rig) -> None:
    n = (PIT_HZ + 125) // 250  # Linux's LATCH for HZ=250
    rig.at(1000)
    rig.program(0, 0x34, n)
    assert rig.pit.next_deadline_ns() == ticks_to_ns(1000 + n)
    rig.pit.update(ticks_to_ns(1000 + n) - 1)
    assert rig.pulses == 0
    rig.pit.update(ticks_to_ns(1000 + n))
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() == ticks_to_ns(1000 + 2 * n)
    rig.pit.update(ticks_to_ns(1000 + 7 * n + 5))  # five periods missed...
    assert rig.pulses == 2  # ...coalesced into one edge
    assert rig.pit.next_deadline_ns() == ticks_to_ns(1000 + 8 * n)


def test_mode2_count_and_out(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x34, 4)
    got = []
    for tick in range(9):
        rig.at(tick)
        status, count = rig.read_back(0)
        got.append((count, status >> 7))
    assert got == [(4, 1), (3, 1), (2, 1), (1, 0), (4, 1), (3, 1), (2, 1), (1, 0), (4, 1)]


@pytest.mark.parametrize(
    ("n", "counts", "outs"),
    [
        (10, [10, 8, 6, 4, 2, 10, 8, 6, 4, 2, 10], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1]),
        (5, [5, 4, 2, 5, 2, 5, 4], [1, 1, 1, 0, 0, 1, 1]),  # odd: high one tick longer
    ],
)
def test_mode3_square_wave(rig: Rig, n: int, counts: list[int], outs: list[int]) -> None:
    rig.at(0)
    rig.program(0, 0x36, n)
    got_counts, got_outs = [], []
    for tick in range(len(counts)):
        rig.at(tick)
        status, count = rig.read_back(0)
        got_counts.append(count)
        got_outs.append(status >> 7)
    assert (got_counts, got_outs) == (counts, outs)


def test_mode3_edges(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x36, 0)  # 65536: the BIOS's 18.2 Hz
    assert rig.pit.next_deadline_ns() == ticks_to_ns(65536)
    rig.pit.update(ticks_to_ns(65536))
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() == ticks_to_ns(2 * 65536)


def test_mode0_one_shot(rig: Rig) -> None:
    rig.at(0)
    rig.outb(MODE, 0x30)
    status, _ = rig.read_back(0)
    assert status & 0xC0 == 0x40  # OUT low, null count
    rig.outb(CH0, 1000 & 0xFF)
    rig.outb(CH0, 1000 >> 8)
    rig.at(10)
    assert rig.read_back(0) == (0x30, 990)
    assert rig.pit.next_deadline_ns() == ticks_to_ns(1000)
    rig.pit.update(ticks_to_ns(1000))
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() is None
    rig.at(1005)
    assert rig.read_back(0) == (0xB0, 0xFFFB)  # OUT stays high, the count wraps
    rig.pit.update(ticks_to_ns(10**6))
    assert rig.pulses == 1


def test_mode0_first_byte_stops_counting(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x30, 100)
    rig.at(40)
    rig.outb(CH0, 50)  # first byte: counting stops, OUT low
    rig.at(200)
    rig.pit.update(ticks_to_ns(200))
    assert rig.pulses == 0
    status, count = rig.read_back(0)
    assert status & 0x80 == 0
    assert count == 60
    rig.outb(CH0, 0)  # second byte: count 50 starts now
    assert rig.pit.next_deadline_ns() == ticks_to_ns(250)


def test_mode4_strobe(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x38, 100)  # Linux's one-shot clockevent mode
    assert rig.pit.next_deadline_ns() == ticks_to_ns(101)  # OUT low at 0, rises a tick later
    rig.at(100)
    assert rig.read_back(0)[0] & 0x80 == 0
    rig.pit.update(ticks_to_ns(101))
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() is None
    rig.at(500)
    rig.outb(CH0, 10)  # re-arm: a new count restarts without a control word
    rig.outb(CH0, 0)
    assert rig.pit.next_deadline_ns() == ticks_to_ns(511)


def test_mode2_new_count_waits_for_period_end(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x34, 100)
    rig.at(250)
    rig.pit.update(ticks_to_ns(250))
    rig.outb(CH0, 40)
    rig.outb(CH0, 0)
    assert rig.pit.next_deadline_ns() == ticks_to_ns(300)
    rig.pit.update(ticks_to_ns(300))
    assert rig.pit.next_deadline_ns() == ticks_to_ns(340)
    rig.at(345)
    assert rig.read_back(0)[1] == 35


def test_mode3_new_count_waits_for_half_period_end(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x36, 100)
    rig.at(20)
    rig.pit.update(ticks_to_ns(20))
    rig.outb(CH0, 40)
    rig.outb(CH0, 0)
    # The high half ends at 50; the new count's 20-tick low half follows.
    assert rig.pit.next_deadline_ns() == ticks_to_ns(70)
    rig.at(55)
    assert rig.read_back(0)[0] & 0x80 == 0
    rig.pit.update(ticks_to_ns(70))
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() == ticks_to_ns(110)


def test_reprogramming_delivers_a_due_edge(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x34, 100)
    rig.at(150)  # the edge at 100 was never collected by update()
    rig.program(0, 0x34, 100)
    assert rig.pulses == 1
    assert rig.pit.next_deadline_ns() == ticks_to_ns(250)


def test_counter_latch_freezes_value(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x34, 0)  # 65536
    rig.at(100)
    rig.outb(MODE, 0x00)  # latch channel 0
    rig.at(5000)
    rig.outb(MODE, 0x00)  # ignored: already latched
    assert (rig.inb(CH0), rig.inb(CH0)) == (0x9C, 0xFF)  # 65536 - 100
    assert (rig.inb(CH0), rig.inb(CH0)) == (0x78, 0xEC)  # live again: 65536 - 5000


def test_read_back_variants(rig: Rig) -> None:
    rig.at(0)
    rig.outb(MODE, 0x34)
    rig.outb(MODE, 0xE2)  # status only, channel 0
    assert rig.inb(CH0) == 0xF4  # OUT high, null count, lohi, mode 2
    rig.outb(CH0, 100)
    rig.outb(CH0, 0)
    rig.at(10)
    assert rig.read_back(0) == (0xB4, 90)
    rig.outb(MODE, 0xD2)  # count only
    rig.at(20)
    assert (rig.inb(CH0), rig.inb(CH0)) == (90, 0)
    rig.outb(MODE, 0x35)  # BCD flag is kept for the status byte
    rig.outb(MODE, 0xE2)
    assert rig.inb(CH0) & 0x01 == 1


@pytest.mark.parametrize(
    ("control", "writes", "reads"),
    [
        (0x34, [0x34, 0x12], [0x34, 0x12, 0x34, 0x12]),  # lohi flip-flop
        (0x14, [0x20], [0x20, 0x20, 0x20]),  # lobyte only
        (0x24, [0x20], [0x20, 0x20, 0x20]),  # hibyte only: count 0x2000
    ],
)
def test_access_modes(rig: Rig, control: int, writes: list[int], reads: list[int]) -> None:
    rig.at(0)
    rig.outb(MODE, control)
    for w in writes:
        rig.outb(CH0, w)
    assert [rig.inb(CH0) for _ in reads] == reads


def test_control_word_resets_flip_flop(rig: Rig) -> None:
    rig.at(0)
    rig.program(0, 0x34, 0x1234)
    assert rig.inb(CH0) == 0x34  # next read would be the high byte
    rig.program(0, 0x34, 0x5678)
    assert rig.inb(CH0) == 0x78


def test_linux_pit_calibrate_tsc(rig: Rig) -> None:
    """arch/x86/kernel/tsc.c:pit_calibrate_tsc(): channel 2, mode 0, poll port 0x61 bit 5."""
    rig.clock.t = 123_456_789
    rig.outb(PORTB, (rig.inb(PORTB) & ~0x02) | 0x01)
    rig.outb(MODE, 0xB0)
    latch = PIT_HZ // (1000 // 10)
    rig.outb(CH2, latch & 0xFF)
    rig.outb(CH2, latch >> 8)
    t0 = rig.clock.t
    pitcnt = 0
    while not rig.inb(PORTB) & 0x20:
        rig.clock.t += 1000  # 1 us per loop
        pitcnt += 1
        assert pitcnt < 100_000
    fire = ticks_to_ns(ns_to_ticks(t0) + latch)
    assert fire <= rig.clock.t < fire + 1000
    assert pitcnt >= 1000  # Linux's loopmin for 10 ms
    assert rig.pulses == 0  # channel 2 has no IRQ


def test_linux_quick_pit_calibrate(rig: Rig) -> None:
    """quick_pit_calibrate(): read channel 2's MSB as it counts down from 0xffff."""
    rig.clock.t = 0
    rig.outb(PORTB, (rig.inb(PORTB) & ~0x02) | 0x01)
    rig.outb(MODE, 0xB0)
    rig.outb(CH2, 0xFF)
    rig.outb(CH2, 0xFF)
    rig.inb(CH2)
    rig.inb(CH2)
    for i in range(20):
        expect = 0xFF - i
        seen = 0
        while True:
            rig.inb(CH2)  # LSB ignored
            msb = rig.inb(CH2)
            if msb != expect:
                break
            seen += 1
            rig.clock.t += 2000
        assert msb == expect - 1
        assert seen > 50  # 256 ticks = 214 us at 2 us per poll


def test_gate_pauses_mode0(rig: Rig) -> None:
    rig.at(0)
    rig.outb(PORTB, 0x01)
    rig.program(2, 0xB0, 1000)
    rig.at(100)
    rig.outb(PORTB, 0x00)
    rig.at(500)
    assert rig.read_back(2) == (0x30, 900)
    rig.outb(PORTB, 0x01)
    rig.at(600)
    assert rig.read_back(2) == (0x30, 800)
    rig.at(1399)
    assert not rig.inb(PORTB) & 0x20
    rig.at(1400)
    assert rig.inb(PORTB) & 0x20


def test_gate_restarts_mode2(rig: Rig) -> None:
    rig.at(0)
    rig.outb(PORTB, 0x01)
    rig.program(2, 0xB4, 100)
    rig.at(30)
    rig.outb(PORTB, 0x00)  # stops counting, OUT forced high
    assert rig.read_back(2) == (0xB4, 70)
    rig.at(1000)
    rig.outb(PORTB, 0x01)  # rising gate reloads
    rig.at(1010)
    assert rig.read_back(2)[1] == 90


def test_mode1_triggered_by_gate(rig: Rig) -> None:
    rig.at(0)
    rig.program(2, 0xB2, 100)
    assert rig.inb(PORTB) & 0x20  # OUT high until triggered
    rig.at(10)
    rig.outb(PORTB, 0x01)
    rig.at(50)
    assert not rig.inb(PORTB) & 0x20
    assert rig.read_back(2)[1] == 60
    rig.at(110)
    assert rig.inb(PORTB) & 0x20


def test_port61_bits(rig: Rig) -> None:
    rig.outb(PORTB, 0xFF)
    first = rig.inb(PORTB)
    second = rig.inb(PORTB)
    assert first & 0x0F == 0x0F
    assert (first ^ second) == 0x10  # refresh toggles on each read
    rig.outb(PORTB, 0x00)
    assert rig.inb(PORTB) & 0x0F == 0


def test_control_port_reads_all_ones(rig: Rig) -> None:
    assert rig.inb(MODE) == 0xFF


def test_clock_read_only_when_needed(rig: Rig) -> None:
    calls = []

    class CountingClock:
        def now_ns(self) -> int:
            calls.append(1)
            return 0

    pit = Pit8254(CountingClock(), IrqLine(0, lambda line, level: None))
    pit.pio_write(3, 1, 0x34)  # channel idle: nothing to time
    pit.pio_write(0, 1, 0x10)  # first byte of a count
    pit.pio_read(1, 1)  # idle channel 1
    pit.port61.pio_read(0, 1)  # channel 2 idle
    assert calls == []
    pit.pio_write(0, 1, 0x00)  # the count starts: needs the time
    assert calls
