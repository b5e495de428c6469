"""gdb steps into and back out of a timer interrupt, with either interrupt controller.

The interrupt is taken between two guest instructions: a stop at the handler's first
instruction, a reverse-stepi to the instruction it interrupted (the RIP the CPU pushed),
and a stepi into the handler again must all land exactly, whether rrvmm's 8259 injected
it (user irqchip) or KVM's delivered it on its own (kernel irqchip).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gdb_driver import Gdb, gdb_on_replay
from machines import MACHINES, backend_of
from rrvmm_cli import rrvmm

# timer halts between ticks (the tick wakes a HLT); irqhash is interrupted mid-loop (on
# the software CPU guest time is instruction time: a faster tick gives it a few)
GUESTS = [
    ("timer", {"kvm": "", "soft": ""}),
    ("irqhash", {"kvm": "hz=1000 loops=1", "soft": "hz=10000 loops=3"}),
]


@pytest.fixture(scope="module", params=MACHINES)
def machine(request: pytest.FixtureRequest) -> list[str]:
    return request.param


@pytest.fixture(params=GUESTS, ids=[g for g, _ in GUESTS])
def session(
    request: pytest.FixtureRequest, machine: list[str], tmp_path: Path, guest_dir: Path
) -> Iterator[Gdb]:
    name, appends = request.param
    append = appends[backend_of(machine)]
    trace = tmp_path / f"{name}.rrt"
    r = rrvmm(
        "record", *machine, "--kernel", str(guest_dir / f"{name}.mb"),
        "--append", append, "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert r.status == 0, r.err
    with gdb_on_replay(trace, guest_dir / f"{name}.elf") as g:
        yield g


def _regs(g: Gdb) -> str:
    return g.cmd("info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 rip eflags")


def test_reverse_stepi_out_of_an_interrupt_delivery(session: Gdb) -> None:
    g = session
    g.cmd("break isr_32")
    for _ in range(3):  # the third tick: well inside the run
        stop = g.run("continue")
        assert stop.get("reason") == "breakpoint-hit", stop
    entry = g.pc()
    at_entry = _regs(g)
    # the CPU pushed the interrupted RIP; the instruction before the delivery is there
    interrupted = int(g.cmd("x/gx $rsp").split(":")[1].split()[0], 16)
    g.cmd("delete")
    g.run("reverse-stepi")
    assert g.pc() == interrupted, (hex(g.pc()), hex(interrupted))
    g.run("stepi")
    assert g.pc() == entry
    assert _regs(g) == at_entry
    # and once more, from a stop reached going backwards
    g.run("reverse-stepi")
    assert g.pc() == interrupted
