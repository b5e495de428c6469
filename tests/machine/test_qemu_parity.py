"""The same guest images boot in QEMU with the same serial output (deterministic guests)."""

from __future__ import annotations

import subprocess

import pytest

from rrvmm_cli import rrvmm

pytestmark = [pytest.mark.kvm, pytest.mark.qemu]

QEMU = [
    "qemu-system-x86_64", "-nographic", "-serial", "stdio", "-monitor", "none",
    "-display", "none", "-no-reboot", "-net", "none", "-machine", "pc", "-m", "128M",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
]  # fmt: skip


def _qemu(kernel: str, append: str = "") -> tuple[int, str]:
    p = subprocess.run(
        [*QEMU, "-kernel", kernel, "-append", append],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    status = p.returncode >> 1 if p.returncode & 1 else -p.returncode
    return status, p.stdout.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize(
    ("name", "append"),
    [
        ("timer", ""),
        ("rtc", ""),
        ("exceptions", ""),
        ("compute", "n=20000"),
        ("pio", "n=200"),
        ("corrupt", ""),
        ("uart", "lines=0"),
    ],
)
def test_serial_output_matches_qemu(guest, name: str, append: str) -> None:  # noqa: ANN001
    kernel = str(guest(name))
    ours = rrvmm("run", "--kernel", kernel, "--append", append, stdin=None)
    status, theirs = _qemu(kernel, append)
    assert ours.out, ours.err
    # QEMU's firmware prints its banner first; the guest's output is the tail
    assert theirs.endswith(ours.out), f"rrvmm:\n{ours.out}\nqemu:\n{theirs}"
    assert status == ours.status
