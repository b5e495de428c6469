"""The modern PC (`--apic on`): guests/apic.c on every machine, recorded and replayed.

The guest's last line hashes every interrupt's vector and the RIP it landed on (LAPIC
timer one-shot and periodic, the PIT through I/O APIC pin 2, the UART's level-triggered
THRE interrupt re-sent after EOI, nested and TPR-held self IPIs), so a replay that puts
one delivery elsewhere prints another hash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from machines import MACHINES
from rrvmm.errors import ExitStatus
from rrvmm_cli import rrvmm

RUNS = 20


def _last(out: str) -> str:
    return [line for line in out.splitlines() if line.startswith("apic events=")][-1]


@pytest.mark.parametrize("machine", MACHINES)
def test_apic_guest_records_and_replays_exactly(
    machine: list[str],
    guest,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    if "kernel" in machine:
        r = rrvmm("record", *machine, "--apic", "on", "--kernel", str(guest("apic")),
                  "-o", str(tmp_path / "t.rrt"), stdin=None)  # fmt: skip
        assert r.status == ExitStatus.USAGE
        assert r.err.strip().splitlines() == [
            "rrvmm: --apic on needs --irqchip user (KVM's own APIC is not recordable here)"
        ]
        return
    for i in range(RUNS):
        trace = tmp_path / f"t{i}.rrt"
        rec = rrvmm("record", *machine, "--apic", "on", "--kernel", str(guest("apic")),
                    "-o", str(trace), stdin=None)  # fmt: skip
        assert rec.status == 0, rec.out + rec.err
        assert "FAIL" not in rec.out
        rep = rrvmm("replay", str(trace), stdin=None)
        assert rep.status == 0, rep.err
        assert "replay matched all" in rep.err
        assert _last(rep.out) == _last(rec.out)
        trace.unlink()


def test_apic_off_guest_sees_no_apic(guest) -> None:  # noqa: ANN001
    """Without --apic the machine stays the PIC-only PC: CPUID hides the APIC."""
    r = rrvmm("run", "--backend", "soft", "--kernel", str(guest("apic")), stdin=None)
    assert r.status == 1
    assert "CPUID says there is no local APIC" in r.out
