"""gdb steps back out of a LAPIC timer interrupt (`--apic on`) and into it again.

The local APIC timer's deadline is kept like the PIT's (an exact instruction count on the
software CPU, a forced exit that replay lands on KVM), so a reverse-stepi from the
handler's first instruction reaches the interrupted instruction, and a stepi from there
takes the same delivery again, registers equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gdb_driver import Gdb, gdb_on_replay
from machines import MACHINES
from rrvmm_cli import rrvmm

APIC_MACHINES = [m for m in MACHINES if "kernel" not in m.id]  # --apic needs --irqchip user
LAPIC_TIMER_STUB = "isr_27"  # guests/apic.c: V_TIMER 0x1b


@pytest.fixture(params=APIC_MACHINES)
def session(request: pytest.FixtureRequest, tmp_path: Path, guest_dir: Path) -> Iterator[Gdb]:
    trace = tmp_path / "apic.rrt"
    r = rrvmm(
        "record", *request.param, "--apic", "on",
        "--kernel", str(guest_dir / "apic.mb"), "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert r.status == 0, r.err
    with gdb_on_replay(trace, guest_dir / "apic.elf") as g:
        yield g


def _regs(g: Gdb) -> str:
    return g.cmd("info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 rip eflags")


def test_reverse_stepi_out_of_a_lapic_timer_delivery(session: Gdb) -> None:
    g = session
    g.cmd(f"break {LAPIC_TIMER_STUB}")
    for _ in range(8):  # a periodic-mode tick, well inside the run
        stop = g.run("continue")
        assert stop.get("reason") == "breakpoint-hit", stop
    entry = g.pc()
    at_entry = _regs(g)
    interrupted = int(g.cmd("x/gx $rsp").split(":")[1].split()[0], 16)
    g.cmd("delete")
    g.run("reverse-stepi")
    assert g.pc() == interrupted, (hex(g.pc()), hex(interrupted))
    g.run("stepi")
    assert g.pc() == entry
    assert _regs(g) == at_entry
    g.run("reverse-stepi")
    assert g.pc() == interrupted
