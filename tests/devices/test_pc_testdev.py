"""pc-testdev on bytes: the scratch port at every width, IRQ lines, flush page, iomem."""

from __future__ import annotations

import logging

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrvmm.devices.bus import Bus
from rrvmm.devices.pc_testdev import (
    IOMEM_SIZE,
    IRQ_PORT_BASE,
    IRQ_PORT_COUNT,
    IRQ_PORT_OFFSET,
    TESTDEV_PORT_BASE,
    TESTDEV_PORT_COUNT,
    PcTestdev,
)
from rrvmm.devices.state import restore, snapshot


class Rig:
    """The device mapped where QEMU puts it."""

    def __init__(self) -> None:
        self.irqs: list[tuple[int, bool]] = []
        self.flushed: list[int] = []
        self.dev = PcTestdev(
            lambda line, level: self.irqs.append((line, level)), self.flushed.append
        )
        self.ports = Bus()
        self.ports.insert(self.dev, TESTDEV_PORT_BASE, TESTDEV_PORT_COUNT)
        self.ports.insert(self.dev, IRQ_PORT_BASE, IRQ_PORT_COUNT, offset=IRQ_PORT_OFFSET)

    def _irq(self, line: int, level: bool) -> None:
        self.irqs.append((line, level))

    def out(self, port: int, size: int, value: int) -> None:
        hit = self.ports.resolve(port)
        assert hit is not None
        hit[0].pio_write(hit[1], size, value)

    def inp(self, port: int, size: int) -> int:
        hit = self.ports.resolve(port)
        assert hit is not None
        return hit[0].pio_read(hit[1], size)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_scratch_reads_back_at_every_width(rig: Rig) -> None:
    # realmode.flat's io tests: out then in at 8, 16 and 32 bits.
    rig.out(0xE0, 1, 0xFF)
    assert rig.inp(0xE0, 1) == 0xFF
    rig.out(0xE0, 2, 0xFFFF)
    assert rig.inp(0xE0, 2) == 0xFFFF
    rig.out(0xE0, 4, 0xFFFFFFFF)
    assert rig.inp(0xE0, 4) == 0xFFFFFFFF
    rig.out(0xE0, 4, 0x12345678)
    assert rig.inp(0xE1, 1) == 0x56
    assert rig.inp(0xE2, 2) == 0x1234
    rig.out(0xE3, 1, 0xAB)
    assert rig.inp(0xE0, 4) == 0xAB345678


def test_string_io_semantics(rig: Rig) -> None:
    # emulator.flat: rep outsb leaves the last byte; outw then rep insb reads the low byte.
    for ch in b"abcdefghijklmnop":
        rig.out(0xE0, 1, ch)
    assert rig.inp(0xE0, 1) == ord("p")
    rig.out(0xE0, 2, 0x9999)
    assert [rig.inp(0xE0, 1) for _ in range(3)] == [0x99] * 3


def test_misaligned_access_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.out(0xE0, 4, 0x11223344)
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        rig.out(0xE1, 2, 0xFFFF)
        assert rig.inp(0xE2, 4) == 0
        rig.out(0xE1, 2, 0xFFFF)
    assert rig.inp(0xE0, 4) == 0x11223344
    assert len(caplog.records) == 2


def test_byte_split_window_shares_the_register(rig: Rig) -> None:
    rig.out(0xE8, 4, 0xCAFEBABE)
    assert rig.inp(0xE0, 4) == 0xCAFEBABE
    rig.out(0xEA, 2, 0x1234)
    assert rig.inp(0xE0, 4) == 0x1234BABE
    assert rig.inp(0xE9, 2) == 0x34BA
    assert rig.inp(0xEB, 1) == 0x12


def test_flush_page(rig: Rig) -> None:
    rig.out(0xE4, 4, 0x12345ABC)
    assert rig.flushed == [0x12345000]
    rig.out(0xE4, 2, 0x1000)
    assert rig.flushed == [0x12345000]
    assert rig.inp(0xE4, 4) == 0


def test_irq_lines(rig: Rig) -> None:
    rig.out(0x2000 + 0x0E, 1, 1)
    rig.out(0x2000 + 0x0E, 1, 0)
    rig.out(0x2000 + 23, 1, 0x80)
    rig.out(0x2000 + 1, 2, 1)  # only byte writes count
    assert rig.irqs == [(14, True), (14, False), (23, True)]
    assert rig.inp(0x2005, 1) == 0


def test_iomem(rig: Rig) -> None:
    dev = rig.dev
    dev.mmio_write(0x100, 4, 0xDEADBEEF)
    assert dev.mmio_read(0x100, 4) == 0xDEADBEEF
    assert dev.mmio_read(0x101, 2) == 0xADBE
    dev.mmio_write(0x102, 1, 0x00)
    assert dev.mmio_read(0x100, 8) == 0xDE00BEEF
    dev.mmio_write(IOMEM_SIZE - 2, 4, 0x44332211)  # clipped at the end
    assert dev.mmio_read(IOMEM_SIZE - 2, 4) == 0x2211
    assert len(dev.state.iomem) == IOMEM_SIZE


_OPS = st.one_of(
    st.tuples(
        st.just("out"),
        st.integers(0xE0, 0xEB) | st.integers(0x2000, 0x2017),
        st.sampled_from([1, 2, 4]),
        st.integers(0, 2**32 - 1),
    ),
    st.tuples(
        st.just("in"),
        st.integers(0xE0, 0xEB) | st.integers(0x2000, 0x2017),
        st.sampled_from([1, 2, 4]),
    ),
    st.tuples(
        st.just("mw"),
        st.integers(0, IOMEM_SIZE - 1),
        st.sampled_from([1, 2, 4, 8]),
        st.integers(0, 2**64 - 1),
    ),
    st.tuples(st.just("mr"), st.integers(0, IOMEM_SIZE - 1), st.sampled_from([1, 2, 4, 8])),
)


def _run(rig: Rig, ops: list[tuple]) -> list[object]:
    out: list[object] = []
    for op in ops:
        if op[0] == "out":
            rig.out(op[1], op[2], op[3])
        elif op[0] == "in":
            out.append(rig.inp(op[1], op[2]))
        elif op[0] == "mw":
            rig.dev.mmio_write(op[1], op[2], op[3])
        else:
            out.append(rig.dev.mmio_read(op[1], op[2]))
    out.append((rig.irqs[:], rig.flushed[:], snapshot(rig.dev)))
    rig.irqs.clear()
    rig.flushed.clear()
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warm=st.lists(_OPS, max_size=30), work=st.lists(_OPS, max_size=30))
def test_fuzz_and_snapshot_round_trip(warm: list[tuple], work: list[tuple]) -> None:
    rig = Rig()
    _run(rig, warm)
    assert 0 <= rig.dev.state.scratch < 2**32
    snap = msgpack.unpackb(msgpack.packb(snapshot(rig.dev)))
    first = _run(rig, work)
    restore(rig.dev, snap)
    assert _run(rig, work) == first
