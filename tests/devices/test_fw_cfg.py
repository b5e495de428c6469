"""fw_cfg on bytes: the selectors a guest reads at start-up, the file directory, DMA."""

from __future__ import annotations

import logging
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrvmm.devices.bus import Bus
from rrvmm.devices.fw_cfg import E820Entry, FwCfg
from rrvmm.devices.state import restore, snapshot

E820 = [E820Entry(0, 0x9FC00, 1), E820Entry(0x9FC00, 0x400, 2), E820Entry(0x100000, 0x7F00000, 1)]
MEM_SIZE = 1 << 20


class Memory:
    def __init__(self) -> None:
        self.ram = bytearray(MEM_SIZE)

    def read(self, addr: int, length: int) -> bytes:
        if addr < 0 or addr + length > MEM_SIZE:
            raise ValueError(f"{addr:#x}+{length:#x} outside RAM")
        return bytes(self.ram[addr : addr + length])

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > MEM_SIZE:
            raise ValueError(f"{addr:#x}+{len(data):#x} outside RAM")
        self.ram[addr : addr + len(data)] = data


class Rig:
    """fw_cfg mapped as the machine maps it: 0x510 (2 ports) and 0x514 (8 ports)."""

    def __init__(self, **kwargs: object) -> None:
        self.mem = Memory()
        args: dict[str, object] = {
            "ram_size": 128 << 20,
            "e820": E820,
            "nb_cpus": 1,
            "cmdline": b"console=ttyS0 quiet",
            "cmdline_addr": 0x20000,
            "read_memory": self.mem.read,
            "write_memory": self.mem.write,
        }
        args.update(kwargs)
        self.dev = FwCfg(**args)  # type: ignore[arg-type]
        self.bus = Bus()
        self.bus.insert(self.dev, 0x510, 2)
        self.bus.insert(self.dev, 0x514, 8, offset=4)

    def out(self, port: int, size: int, value: int) -> None:
        hit = self.bus.resolve(port)
        assert hit is not None
        hit[0].pio_write(hit[1], size, value)

    def inp(self, port: int, size: int) -> int:
        hit = self.bus.resolve(port)
        assert hit is not None
        return hit[0].pio_read(hit[1], size)

    def read_item(self, selector: int, length: int) -> bytes:
        """As kvm-unit-tests' fwcfg_get_u does: outw the selector, inb the data."""
        self.out(0x510, 2, selector)
        return bytes(self.inp(0x511, 1) for _ in range(length))

    def dma(self, control: int, length: int, address: int, at: int = 0x1000) -> int:
        self.mem.write(at, struct.pack(">IIQ", control, length, address))
        self.out(0x514, 4, int.from_bytes((at >> 32).to_bytes(4, "big"), "little"))
        self.out(0x518, 4, int.from_bytes((at & 0xFFFFFFFF).to_bytes(4, "big"), "little"))
        return struct.unpack(">I", self.mem.read(at, 4))[0]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_startup_selectors(rig: Rig) -> None:
    assert rig.read_item(0x00, 4) == b"QEMU"
    assert rig.read_item(0x01, 4) == struct.pack("<I", 3)  # traditional + DMA
    assert rig.read_item(0x03, 8) == struct.pack("<Q", 128 << 20)
    assert rig.read_item(0x05, 2) == struct.pack("<H", 1)
    assert rig.read_item(0x0F, 2) == struct.pack("<H", 1)
    assert rig.read_item(0x8002, 4) == struct.pack("<I", 1)
    assert rig.read_item(0x13, 4) == struct.pack("<I", 0x20000)
    assert rig.read_item(0x14, 4) == struct.pack("<I", 20)
    assert rig.read_item(0x15, 20) == b"console=ttyS0 quiet\0"
    assert rig.read_item(0x0D, 16) == bytes(16)


def test_reads_past_the_end_and_unknown_selectors_are_zero(rig: Rig) -> None:
    assert rig.read_item(0x00, 6) == b"QEMU\0\0"
    assert rig.read_item(0x10, 2) == b"\0\0"  # in range, no item
    assert rig.read_item(0x3FFF, 2) == b"\0\0"  # out of range
    assert rig.read_item(0x4000 | 0x05, 2) == struct.pack("<H", 1)  # write channel, same item
    assert rig.read_item(0x8005, 2) == b"\0\0"  # arch-local table has no 5


def test_selecting_rewinds(rig: Rig) -> None:
    rig.out(0x510, 2, 0)
    assert rig.inp(0x511, 1) == ord("Q")
    assert rig.inp(0x510, 1) == ord("E")  # a byte read at either port reads data
    rig.out(0x510, 2, 0)
    assert rig.inp(0x511, 1) == ord("Q")
    rig.out(0x511, 1, 0x55)  # legacy data write: ignored
    assert rig.inp(0x511, 1) == ord("E")


def test_cpu_counts_and_no_cmdline() -> None:
    rig = Rig(nb_cpus=2, max_cpus=4, cmdline=None)
    assert rig.read_item(0x05, 2) == struct.pack("<H", 2)
    assert rig.read_item(0x0F, 2) == struct.pack("<H", 4)
    assert rig.read_item(0x14, 4) == bytes(4)
    with pytest.raises(ValueError):
        FwCfg(ram_size=1, e820=[], nb_cpus=0)


def test_file_directory_and_e820(rig: Rig) -> None:
    (count,) = struct.unpack(">I", rig.read_item(0x19, 4))
    assert count == 1
    raw = rig.read_item(0x19, 4 + 64 * count)[4:]
    size, select, reserved, name = struct.unpack(">IHH56s", raw)
    assert name.rstrip(b"\0") == b"etc/e820"
    assert (size, select, reserved) == (60, 0x20, 0)
    table = rig.read_item(select, size)
    entries = [struct.unpack_from("<QQI", table, 20 * i) for i in range(3)]
    assert entries == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, 0x7F00000, 1)]


def test_files_are_sorted_by_name() -> None:
    rig = Rig(files={"opt/z": b"zz", "etc/acpi/rsdp": b"r"})
    raw = rig.read_item(0x19, 4 + 64 * 3)
    names = [struct.unpack_from(">IHH56s", raw, 4 + 64 * i)[3].rstrip(b"\0") for i in range(3)]
    assert names == [b"etc/acpi/rsdp", b"etc/e820", b"opt/z"]
    assert rig.dev.file_selectors == {"etc/acpi/rsdp": 0x20, "etc/e820": 0x21, "opt/z": 0x22}
    assert rig.read_item(0x22, 3) == b"zz\0"
    with pytest.raises(ValueError):
        FwCfg(ram_size=1, e820=[], files={"x" * 56: b""})


def test_dma_signature_and_read(rig: Rig) -> None:
    sig = b"".join(rig.inp(0x514 + i, 1).to_bytes(1, "little") for i in range(8))
    assert sig == b"QEMU CFG"
    assert rig.inp(0x514, 4).to_bytes(4, "little") == b"QEMU"
    # select + read the signature item, 8 bytes: 4 of data then zero fill
    rig.mem.write(0x2000, b"\xaa" * 8)
    assert rig.dma(0x08 | 0x02 | (0x0000 << 16), 8, 0x2000) == 0
    assert rig.mem.read(0x2000, 8) == b"QEMU\0\0\0\0"
    # continue reading the current item with skip then read
    assert rig.dma(0x08 | 0x02 | (0x15 << 16), 8, 0x3000) == 0
    assert rig.dma(0x04, 6, 0) == 0
    assert rig.dma(0x02, 6, 0x3008) == 0
    assert rig.mem.read(0x3000, 14) == b"console=quiet\0"
    # the data port continues where DMA stopped
    rig.dma(0x08 | 0x04 | (0x15 << 16), 3, 0)
    assert rig.inp(0x511, 1) == ord("s")


def test_dma_errors(rig: Rig) -> None:
    assert rig.dma(0x08 | 0x10 | (0x05 << 16), 2, 0x2000) == 1  # nothing is writable
    assert rig.dma(0x08 | 0x02 | (0x00 << 16), 4, MEM_SIZE - 2) == 1  # DMA past RAM
    assert rig.dma(0, 4, 0x2000) == 0  # no operation: nothing moves
    rig.mem.write(0x4000, b"\x11" * 4)
    rig.out(0x514, 4, 0)
    rig.out(0x518, 4, int.from_bytes(MEM_SIZE.to_bytes(4, "big"), "little"))  # descriptor
    assert rig.dev.state.dma_addr == 0  # reset after each transfer


def test_dma_large_zero_fill_is_chunked(rig: Rig) -> None:
    writes: list[int] = []
    rig.dev._write_memory = lambda addr, data: writes.append(len(data))  # noqa: SLF001
    rig.dev._read_memory = lambda addr, n: struct.pack(">IIQ", 0x0A | (0x10 << 16), 1 << 20, 0)  # noqa: SLF001
    rig.out(0x514, 4, 0)
    rig.out(0x518, 4, 0)
    assert max(writes) <= 1 << 16 and sum(writes[:-1]) == 1 << 20


def test_without_memory_access_dma_is_off(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(read_memory=None, write_memory=None)
    assert rig.read_item(0x01, 4) == struct.pack("<I", 1)
    with caplog.at_level(logging.WARNING, logger="rrvmm"):
        rig.out(0x514, 4, 0)
        rig.out(0x518, 4, 0)
        rig.out(0x510, 4, 0)
        assert rig.inp(0x510, 2) == 0
    assert len(caplog.records) == 3


_SIZES = st.sampled_from([1, 2, 4])
_OPS = st.one_of(
    st.tuples(st.just("sel"), st.integers(0, 0xFFFF)),
    st.tuples(
        st.just("in"), st.sampled_from([0x510, 0x511, 0x514, 0x517]), st.sampled_from([1, 2, 4])
    ),
    st.tuples(
        st.just("out"),
        st.sampled_from([0x510, 0x511, 0x514, 0x518]),
        st.sampled_from([1, 2, 4]),
        st.integers(0, 2**32 - 1),
    ),
    st.tuples(
        st.just("dma"),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 1 << 16),
        st.integers(0, MEM_SIZE),
    ),
)


def _run(rig: Rig, ops: list[tuple]) -> list[object]:
    out: list[object] = []
    for op in ops:
        if op[0] == "sel":
            rig.out(0x510, 2, op[1])
        elif op[0] == "in":
            out.append(rig.inp(op[1], op[2]))
        elif op[0] == "out":
            rig.out(op[1], op[2], op[3])
        else:
            out.append(rig.dma(op[1], op[2], op[3]))
    out.append(snapshot(rig.dev))
    out.append(bytes(rig.mem.ram).count(0))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warm=st.lists(_OPS, max_size=30), work=st.lists(_OPS, max_size=30))
def test_fuzz_and_snapshot_round_trip(warm: list[tuple], work: list[tuple]) -> None:
    rig = Rig()
    _run(rig, warm)
    snap = msgpack.unpackb(msgpack.packb(snapshot(rig.dev)))
    ram = bytes(rig.mem.ram)
    first = _run(rig, work)
    restore(rig.dev, snap)
    rig.mem.ram[:] = ram
    assert _run(rig, work) == first
