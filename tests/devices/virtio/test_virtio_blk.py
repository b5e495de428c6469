"""virtio-blk over a temporary disk image: the requests Linux's virtio_blk sends."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from driver import Driver

from rrvmm.devices.virtio import WRITE_THROUGH, Disk, DiskError, VirtioBlk
from rrvmm.devices.virtio.blk import (
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
)

SECTORS = 64


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(bytes([i]) * 512 for i in range(SECTORS)))
    return path


class Blk:
    """A started virtio-blk driver with request helpers."""

    def __init__(self, disk: Disk) -> None:
        self.d = Driver(VirtioBlk(disk))
        (self.q,) = self.d.start()

    def request(
        self, kind: int, sector: int, out: bytes = b"", in_len: int = 0
    ) -> tuple[int, bytes]:
        d, q = self.d, self.q
        bufs = [d.buffer(struct.pack("<IIQ", kind, 0, sector))]
        if out:
            bufs.append(d.buffer(out))
        data = d.buffer(in_len, writable=True) if in_len else None
        if data:
            bufs.append(data)
        status = d.buffer(b"\xff", writable=True)
        head = q.post(*bufs, status)
        q.kick()
        assert q.used() == [(head, in_len + 1)]
        return d.read(status)[0], d.read(data) if data else b""


def test_config_and_features(image: Path) -> None:
    b = Blk(Disk(image))
    assert b.d.config(0, 8) == SECTORS
    assert b.d.config(12, 4) == VirtioBlk.queue_max_size - 2  # seg_max
    feats = b.d.device_features()
    assert feats & VIRTIO_BLK_F_FLUSH and not feats & VIRTIO_BLK_F_RO


def test_read(image: Path) -> None:
    status, data = Blk(Disk(image)).request(VIRTIO_BLK_T_IN, 3, in_len=1024)
    assert status == VIRTIO_BLK_S_OK
    assert data == b"\x03" * 512 + b"\x04" * 512


def test_write_then_read_back_through_the_overlay(image: Path) -> None:
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    mtime = os.stat(image).st_mtime_ns
    disk = Disk(image)
    b = Blk(disk)
    assert b.request(VIRTIO_BLK_T_OUT, 5, out=b"\xaa" * 1024)[0] == VIRTIO_BLK_S_OK
    assert b.request(VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    status, data = b.request(VIRTIO_BLK_T_IN, 4, in_len=2048)
    assert data == b"\x04" * 512 + b"\xaa" * 1024 + b"\x07" * 512
    assert sorted(b.d.device.state.disk.overlay) == ["5", "6"]
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert os.stat(image).st_mtime_ns == mtime
    assert disk.sha256() == before


def test_write_through_writes_the_file(image: Path) -> None:
    b = Blk(Disk(image, mode=WRITE_THROUGH))
    assert b.request(VIRTIO_BLK_T_OUT, 1, out=b"\x55" * 512)[0] == VIRTIO_BLK_S_OK
    assert b.request(VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    assert image.read_bytes()[512:1024] == b"\x55" * 512
    assert b.d.device.state.disk.overlay == {}


def test_get_id(image: Path) -> None:
    status, data = Blk(Disk(image)).request(VIRTIO_BLK_T_GET_ID, 0, in_len=20)
    assert status == VIRTIO_BLK_S_OK
    assert data == b"rrvmm-disk".ljust(20, b"\0")


@pytest.mark.parametrize(
    ("kind", "sector", "out", "in_len"),
    [
        (VIRTIO_BLK_T_IN, SECTORS - 1, b"", 1024),  # runs off the end
        (VIRTIO_BLK_T_IN, SECTORS, b"", 512),
        (VIRTIO_BLK_T_OUT, SECTORS, b"x" * 512, 0),
        (VIRTIO_BLK_T_IN, 0, b"", 100),  # not whole sectors
        (VIRTIO_BLK_T_OUT, 0, b"x" * 100, 0),
    ],
)
def test_out_of_range_or_partial_sector_is_ioerr(
    image: Path, kind: int, sector: int, out: bytes, in_len: int
) -> None:
    assert Blk(Disk(image)).request(kind, sector, out, in_len)[0] == VIRTIO_BLK_S_IOERR


def test_unknown_request_is_unsupp(image: Path) -> None:
    assert Blk(Disk(image)).request(11, 0, in_len=512)[0] == VIRTIO_BLK_S_UNSUPP


def test_read_only_disk(image: Path) -> None:
    b = Blk(Disk(image, read_only=True))
    assert b.d.device_features() & VIRTIO_BLK_F_RO
    assert b.request(VIRTIO_BLK_T_OUT, 0, out=b"x" * 512)[0] == VIRTIO_BLK_S_IOERR
    assert b.request(VIRTIO_BLK_T_IN, 0, in_len=512) == (VIRTIO_BLK_S_OK, b"\0" * 512)


def test_any_layout_header_and_status_sharing_descriptors(image: Path) -> None:
    """VERSION_1 implies any framing: one readable header+data, one writable data+status."""
    b = Blk(Disk(image))
    d, q = b.d, b.q
    head = q.post(
        d.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 2)),
        (inout := d.buffer(513, writable=True)),
    )
    q.kick()
    assert q.used() == [(head, 513)]
    assert d.read(inout) == b"\x02" * 512 + b"\0"


def test_overlay_survives_device_reset(image: Path) -> None:
    b = Blk(Disk(image))
    b.request(VIRTIO_BLK_T_OUT, 0, out=b"\x77" * 512)
    (b.q,) = b.d.start()  # start() resets the device first
    assert b.request(VIRTIO_BLK_T_IN, 0, in_len=512)[1] == b"\x77" * 512


def test_disk_sizes_and_errors(tmp_path: Path) -> None:
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\1" * 1300)
    disk = Disk(odd)
    assert disk.sectors == 2
    assert disk.sha256() == hashlib.sha256(b"\1" * 1300).hexdigest()
    with pytest.raises(DiskError, match="cannot open disk image .*missing.img"):
        Disk(tmp_path / "missing.img")
    with pytest.raises(OSError, match="disk image"):
        Disk(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        Disk(odd, mode="cow")
