"""The stock Debian kernel finds rrvmm's virtio disk through ACPI (no kernel rebuild),
mounts an ext4 image, reads a file and writes one, powers off (status 0); the recording
replays exactly and the user's image is untouched."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from test_linux_guest import APPEND, INITRD, MACHINE, VMLINUZ

from rrvmm_cli import rrvmm

pytestmark = [
    pytest.mark.skipif(
        not (VMLINUZ.exists() and INITRD.exists()),
        reason="no Linux guest: run scripts/get-linux-guest.py first",
    ),
    pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)"),
]

RUN = (
    "mkdir -p /mnt; mount /dev/vda /mnt && cat /mnt/greeting.txt"
    " && echo written-by-guest > /mnt/new.txt && cat /mnt/new.txt && umount /mnt; poweroff -f"
)


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "greeting.txt").write_text("hello from the disk\n")
    img = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img), "8M"], check=True)
    return img


def _fingerprint(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def test_mount_read_write_poweroff_and_replay(tmp_path: Path) -> None:
    img = _image(tmp_path)
    before = _fingerprint(img)
    trace = tmp_path / "linux-disk.rrt"
    rec = rrvmm(
        "record", *MACHINE, "--disk", str(img), "-o", str(trace),
        "--append", f'{APPEND} rrvmm.shell=0 rrvmm.run="{RUN}"', stdin=None, timeout=600,
    )  # fmt: skip
    assert rec.status == 0, rec.err[-2000:]  # poweroff: a clean power-off is status 0
    assert "[vda]" in rec.out
    assert "hello from the disk" in rec.out and "written-by-guest" in rec.out
    assert "reboot: Power down" in rec.out
    rep = rrvmm("replay", str(trace), stdin=None, timeout=600)
    assert rep.status == 0, rep.err[-2000:]
    assert rep.out == rec.out
    assert "powered off (ACPI S5)" in rep.err
    assert _fingerprint(img) == before
