"""I/O APIC on bytes: indirect registers, edge and level pins, remote IRR and EOI."""

from __future__ import annotations

import logging

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrvmm.devices.bus import IrqLine
from rrvmm.devices.ioapic import ApicMessage, IoApic
from rrvmm.devices.state import restore, snapshot

SEL, WIN, EOI = 0x00, 0x10, 0x40


class Rig:
    def __init__(self) -> None:
        self.sent: list[ApicMessage] = []
        self.io = IoApic(self.sent.append, ioapic_id=1)

    def read(self, index: int) -> int:
        self.io.mmio_write(SEL, 4, index)
        return self.io.mmio_read(WIN, 4)

    def write(self, index: int, value: int) -> None:
        self.io.mmio_write(SEL, 4, index)
        self.io.mmio_write(WIN, 4, value)

    def route(self, pin: int, low: int, dest: int = 0) -> None:
        self.write(0x11 + 2 * pin, dest << 24)
        self.write(0x10 + 2 * pin, low)

    def vectors(self) -> list[int]:
        out = [m.vector for m in self.sent]
        self.sent.clear()
        return out


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_identification_registers(rig: Rig) -> None:
    assert rig.read(0x00) == 1 << 24
    assert rig.read(0x01) == 0x00170020  # version 0x20, 24 entries
    assert rig.read(0x02) == 1 << 24
    rig.write(0x00, 0x0F000000 | 0xFFFF)
    assert rig.read(0x00) == 0x0F000000
    rig.write(0x01, 0)
    assert rig.read(0x01) == 0x00170020
    rig.write(0x02, 0)
    assert rig.read(0x02) == 0x0F000000  # arbitration ID: read-only, follows the ID
    rig.io.mmio_write(SEL, 1, 0x1FE)
    assert rig.io.mmio_read(SEL, 4) == 0xFE


def test_reset_entries_are_masked(rig: Rig) -> None:
    for pin in range(24):
        assert rig.read(0x10 + 2 * pin) == 0x10000
        assert rig.read(0x11 + 2 * pin) == 0
    rig.io.set_irq(3, True)
    assert rig.sent == []


def test_edge_pin(rig: Rig) -> None:
    rig.route(2, 0x30 | 0x800, dest=0x0F)  # logical
    rig.io.set_irq(2, True)
    assert rig.sent == [ApicMessage(0x30, 0x0F, True, 0, False)]
    rig.io.set_irq(2, True)  # no new edge
    rig.io.set_irq(2, False)
    rig.io.set_irq(2, True)
    assert len(rig.sent) == 2
    rig.sent.clear()
    rig.write(0x14, 0x10030)  # mask
    rig.io.set_irq(2, False)
    rig.io.set_irq(2, True)  # lost while masked
    rig.write(0x14, 0x30)
    assert rig.sent == []
    assert rig.read(0x14) == 0x30  # remote IRR and delivery status stay clear for edge


def test_level_pin_remote_irr_and_eoi(rig: Rig) -> None:
    rig.route(9, 0x8000 | 0x2000 | 0x41)  # level, active low
    rig.io.set_irq(9, True)
    assert rig.vectors() == [0x41]
    assert rig.read(0x22) == 0x8000 | 0x4000 | 0x2000 | 0x41  # remote IRR set
    rig.io.set_irq(9, True)
    assert rig.vectors() == []  # waits for the EOI
    rig.io.eoi(0x42)
    assert rig.vectors() == []  # another vector
    rig.io.eoi(0x41)
    assert rig.vectors() == [0x41]  # still asserted: sent again
    rig.io.set_irq(9, False)
    rig.io.mmio_write(EOI, 4, 0x41)  # the version-0x20 EOI register
    assert rig.vectors() == []
    assert not rig.read(0x22) & 0x4000
    rig.write(0x22, 0x18041)  # masked
    rig.io.set_irq(9, True)
    assert rig.vectors() == []
    rig.write(0x22, 0x8041)  # unmasking an asserted level pin sends it
    assert rig.vectors() == [0x41]
    rig.write(0x22, 0x0041)  # switched to edge: remote IRR cleared
    assert not rig.read(0x22) & 0x4000


def test_read_only_bits_ignore_writes(rig: Rig) -> None:
    rig.route(1, 0xFFFFFFFF)
    assert rig.read(0x12) == 0x1AFFF  # delivery status and remote IRR are read-only
    rig.write(0x13, 0xFFFFFFFF)
    assert rig.read(0x13) == 0xFF000000


def test_out_of_range_index_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        assert rig.read(0x40) == 0xFFFFFFFF
        assert rig.read(0x40) == 0xFFFFFFFF
        rig.write(0x40, 5)
        rig.write(0x03, 5)
        assert rig.read(0x03) == 0xFFFFFFFF
        assert rig.io.mmio_read(WIN, 2) == 0
        rig.io.mmio_write(0x20, 4, 1)
    assert len(caplog.records) == 6
    assert all("I/O APIC" in r.message for r in caplog.records)


def test_irq_line_and_bad_pin(rig: Rig) -> None:
    rig.route(4, 0x8034)
    line = IrqLine(4, rig.io.set_irq)
    line.set(True)
    assert rig.vectors() == [0x34]
    with pytest.raises(ValueError):
        rig.io.set_irq(24, True)


_OPS = st.one_of(
    st.tuples(st.just("sel"), st.integers(0, 0xFF)),
    st.tuples(st.just("win"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("read"), st.sampled_from([SEL, WIN, EOI, 0x20]), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("eoi"), st.integers(0, 255)),
    st.tuples(st.just("irq"), st.integers(0, 23), st.booleans()),
)


def _run(rig: Rig, ops: list[tuple]) -> list[object]:
    out: list[object] = []
    for op in ops:
        if op[0] == "sel":
            rig.io.mmio_write(SEL, 4, op[1])
        elif op[0] == "win":
            rig.io.mmio_write(WIN, 4, op[1])
        elif op[0] == "read":
            out.append(rig.io.mmio_read(op[1], op[2]))
        elif op[0] == "eoi":
            rig.io.mmio_write(EOI, 4, op[1])
        else:
            rig.io.set_irq(op[1], op[2])
        out.append(rig.sent[:])
        rig.sent.clear()
    out.append(snapshot(rig.io))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warm=st.lists(_OPS, max_size=60), work=st.lists(_OPS, max_size=60))
def test_fuzz_and_snapshot_round_trip(warm: list[tuple], work: list[tuple]) -> None:
    rig = Rig()
    _run(rig, warm)
    for entry in rig.io.state.entries:
        assert 0 <= entry < 2**64
    snap = msgpack.unpackb(msgpack.packb(snapshot(rig.io)))
    first = _run(rig, work)
    restore(rig.io, snap)
    assert _run(rig, work) == first


def test_kvm_unit_tests_level_sequences(rig: Rig) -> None:
    """x86/ioapic.c's coalesce, retrigger-with-mask and reconfigure sequences."""
    rig.route(14, 0x8098)
    rig.io.set_irq(14, True)
    # handler: drop, raise, drop, EOI -> one interrupt only (coalesced)
    rig.io.set_irq(14, False)
    rig.io.set_irq(14, True)
    rig.io.set_irq(14, False)
    rig.io.eoi(0x98)
    assert rig.vectors() == [0x98]

    rig.route(14, 0x8083)
    rig.io.set_irq(14, True)
    rig.write(0x2C, 0x18083)  # handler masks, then EOIs
    rig.io.eoi(0x83)
    assert rig.vectors() == [0x83]
    rig.write(0x2C, 0x8083)  # unmasked while still asserted: retriggers
    assert rig.vectors() == [0x83]
    rig.io.set_irq(14, False)
    rig.io.eoi(0x83)

    rig.route(14, 0x8084)
    rig.io.set_irq(14, True)
    rig.io.set_irq(14, False)
    assert rig.read(0x2C) & 0x4000  # remote IRR stays until the EOI
    rig.write(0x2D, 1 << 24)  # new destination, upper half only
    assert rig.read(0x2C) & 0x4000
    rig.io.eoi(0x84)
    assert not rig.read(0x2C) & 0x4000
    assert [(m.vector, m.dest) for m in rig.sent] == [(0x84, 0)]
