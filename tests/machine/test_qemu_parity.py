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


def test_apic_guest_counts_and_delivery_order_match_qemu(guest) -> None:  # noqa: ANN001
    """guests/apic.c on `--apic on` and on QEMU's pc machine: the same checks pass, the
    same interrupts arrive in the same order (only where they landed differs)."""
    kernel = str(guest("apic"))
    ours = rrvmm("run", "--backend", "soft", "--apic", "on", "--kernel", kernel, stdin=None)
    status, theirs = _qemu(kernel)

    def summary(out: str) -> list[str]:
        # QEMU's firmware banner may share the first line
        return [
            line[line.find("apic ") :].rsplit(" hash=", 1)[0]
            for line in out.splitlines()
            if "apic " in line
        ]

    assert ours.status == status == 0, ours.out + theirs
    assert summary(ours.out) == summary(theirs)
