"""One started driver per virtio device kind, with a known-good workload, for the tests that
run the same checks against every device (malformed input, checkpoints, fuzzing).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driver import Driver, DriverQueue, Ram

from rrvmm.devices.virtio import Disk, VirtioBlk, VirtioConsole, VirtioNet, VirtioRng
from rrvmm.devices.virtio.device import VirtioDevice

KINDS = ("blk", "net", "console", "rng")
KICKED = {"blk": 0, "net": 1, "console": 1, "rng": 0}  # the queue the guest kicks with work
FRAME = bytes.fromhex("ffffffffffff525400123456") + b"\x08\x00" + bytes(range(50))


@dataclass
class Rig:
    """A device of one kind, its driver, and everything the device sent to the host."""

    kind: str
    driver: Driver
    out: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def device(self) -> VirtioDevice:
        return self.driver.device

    @property
    def kicked(self) -> DriverQueue:
        return self.driver.queues[KICKED[self.kind]]


def entropy(n: int) -> bytes:
    return bytes((n + i) & 0xFF for i in range(n))


def make_device(kind: str, disk_path: Path | None, out: list[tuple[str, bytes]]) -> VirtioDevice:
    if kind == "blk":
        assert disk_path is not None
        return VirtioBlk(Disk(disk_path))
    if kind == "net":
        return VirtioNet(lambda f: out.append(("tx", f)))
    if kind == "console":
        return VirtioConsole(lambda b: out.append(("out", b)))
    return VirtioRng(entropy)


def make_rig(kind: str, disk_path: Path | None = None, ram_size: int = 1 << 20) -> Rig:
    out: list[tuple[str, bytes]] = []
    rig = Rig(kind, Driver(make_device(kind, disk_path, out), Ram(ram_size)), out)
    rig.driver.start(size=8)
    return rig


def disk_image(directory: Path) -> Path:
    path = directory / "disk.img"
    if not path.exists():
        path.write_bytes(b"".join(bytes([i]) * 512 for i in range(32)))
    return path


def good_request(rig: Rig, n: int = 0) -> Callable[[], None]:
    """Post one valid request on the kicked queue; returns a check that it completed."""
    d, q = rig.driver, rig.kicked
    if rig.kind == "blk":
        head = q.post(
            d.buffer(struct.pack("<IIQ", 1 - n % 2, 0, n % 8)),
            d.buffer(bytes([n]) * 512, writable=n % 2 == 1),
            d.buffer(1, writable=True),
        )
        want_len = 1 if n % 2 == 0 else 513
    elif rig.kind == "net":
        head, want_len = q.post(d.buffer(bytes(12)), d.buffer(FRAME + bytes([n]))), 0
    elif rig.kind == "console":
        head, want_len = q.post(d.buffer(b"line %d\n" % n)), 0
    else:
        head, want_len = q.post(d.buffer(8 + n, writable=True)), 8 + n

    def check() -> None:
        assert q.used() == [(head, want_len)]

    return check
