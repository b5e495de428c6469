"""Random descriptor tables and avail rings: whatever the guest writes, no exception
reaches the hypervisor, and a device either keeps going or sits in NEEDS_RESET."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rigs import KINDS, disk_image, make_rig

from rrvmm.devices.virtio import VirtioConsole, VirtioNet

RAM = 1 << 16
QSIZE = 8

addresses = st.one_of(
    st.integers(0, RAM + 64),
    st.sampled_from([0x1000, 0x8000, RAM - 1, 2**32 - 1, 2**63, 2**64 - 1]),
)
lengths = st.one_of(st.integers(0, 2048), st.sampled_from([2**31, 2**32 - 1]))
descriptors = st.lists(
    st.tuples(addresses, lengths, st.integers(0, 7), st.integers(0, QSIZE + 2)),
    min_size=QSIZE,
    max_size=QSIZE,
)
avail = st.tuples(
    st.integers(0, 3),  # flags
    st.one_of(st.integers(0, QSIZE + 2), st.integers(0, 0xFFFF)),  # idx
    st.lists(st.integers(0, QSIZE + 2), min_size=QSIZE, max_size=QSIZE),
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disk_image(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("kind", KINDS)
def test_random_rings_never_raise(kind: str, image: Path) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        tables=st.lists(st.tuples(descriptors, avail), min_size=1, max_size=2),
        payload=st.binary(max_size=200),
    )
    def run(tables: list, payload: bytes) -> None:
        rig = make_rig(kind, image, ram_size=RAM)
        d = rig.driver
        for q, (descs, (flags, idx, ring)) in zip(d.queues, tables, strict=False):
            for i, (addr, length, dflags, nxt) in enumerate(descs):
                q.write_desc(i, addr, length, dflags, nxt)
            d.ram.write(q.avail, struct.pack("<HH", flags, idx))
            d.ram.write(q.avail + 4, struct.pack(f"<{QSIZE}H", *ring))
        for q in d.queues:
            q.kick()
        dev = rig.device
        if isinstance(dev, VirtioConsole):
            dev.rx_room()
            dev.receive(payload)
        elif isinstance(dev, VirtioNet):
            dev.rx_ready()
            dev.receive(payload)
        for offset in range(0, 0x110, 4):
            d.r(offset)
        d.interrupt()
        assert d.r(0x070) & 0x40 or not dev.failed
        assert d.wire.level == (dev.state.interrupt_status != 0)

    run()
