"""Which ELF gdb gets for a Linux bzImage: the vmlinux of the same build, or none."""

from __future__ import annotations

import struct
from pathlib import Path

from rrvmm.replay.symbol_files import vmlinux_for

VERSION = b"6.1.0-9-amd64 (builder@host) #1 SMP Debian 6.1.27-1 (2023-05-08)"


def _bzimage(path: Path, version: bytes) -> Path:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x600)  # the string at 0x600 + 0x200
    data[0x800 : 0x800 + len(version) + 1] = version + b"\0"
    path.write_bytes(bytes(data))
    return path


def _vmlinux(path: Path, banner: bytes) -> Path:
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(100) + banner + b"\0" + bytes(100))
    return path


BANNER = b"Linux version 6.1.0-9-amd64 (builder@host) (gcc 12) #1 SMP Debian 6.1.27-1 (2023-05-08)"


def test_vmlinux_beside_vmlinuz_of_the_same_build(tmp_path: Path) -> None:
    kernel = _bzimage(tmp_path / "vmlinuz-6.1.0-9-amd64", VERSION)
    assert vmlinux_for(kernel) is None  # none there yet
    vmlinux = _vmlinux(tmp_path / "vmlinux-6.1.0-9-amd64", BANNER)
    assert vmlinux_for(kernel) == vmlinux


def test_vmlinux_of_another_build_is_not_taken(tmp_path: Path) -> None:
    kernel = _bzimage(tmp_path / "vmlinuz-6.1.0-9-amd64", VERSION)
    _vmlinux(tmp_path / "vmlinux-6.1.0-9-amd64", BANNER.replace(b"2023-05-08", b"2023-06-01"))
    assert vmlinux_for(kernel) is None


def test_vmlinux_at_the_top_of_a_build_tree(tmp_path: Path) -> None:
    boot = tmp_path / "linux" / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    kernel = _bzimage(boot / "bzImage", VERSION)
    vmlinux = _vmlinux(tmp_path / "linux" / "vmlinux", BANNER)
    assert vmlinux_for(kernel) == vmlinux
    assert vmlinux_for(_vmlinux(tmp_path / "not-a-bzimage", BANNER)) is None
