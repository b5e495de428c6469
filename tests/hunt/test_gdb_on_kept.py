"""gdb on a trace `rrvmm hunt` kept finds the racing store: the timer tick that landed
between racy_add's load and store, and then the store that overwrites its update."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from gdb_driver import gdb_on_replay
from hunt_procs import REPO
from rrvmm_cli import rrvmm


def _window(g) -> tuple[int, int]:  # noqa: ANN001
    """racy_add's window: from the instruction after the load of `counter` to the store."""
    text = g.cmd("disassemble racy_add")
    insns = [
        (int(m.group(1), 16), m.group(2))
        for m in re.finditer(r"(0x[0-9a-f]+) <\+\d+>:\s+(.*)", text)
    ]
    load = next(i for i, (_, t) in enumerate(insns) if "<counter>" in t and t.startswith("mov "))
    store = next(a for a, t in insns[load + 1 :] if "<counter>" in t and t.startswith("mov "))
    return insns[load + 1][0], store


def test_gdb_finds_the_racing_store_in_a_kept_trace(guest_dir: Path, tmp_path: Path) -> None:
    kept_dir = tmp_path / "kept"
    h = rrvmm("hunt", "--runs", "10", "-j", "2", "--json", "-o", str(kept_dir), "--",
              "--backend", "soft", "--kernel", str(guest_dir / "flaky.mb"), "--append",
              "ticks=5", stdin=None, timeout=300, cwd=str(tmp_path),
              env={"PYTHONPATH": str(REPO)})  # fmt: skip
    assert h.status == 0, h.err
    trace = Path(json.loads(h.out)["kept"][0]["path"])
    elf = Path(shutil.copy(guest_dir / "flaky.elf", tmp_path / "flaky.elf"))
    with gdb_on_replay(trace, elf) as g:
        first, store = _window(g)
        # the tick whose interrupt frame points inside the window (rdi: the frame)
        g.cmd(f"break *timer_tick if ((struct isr_frame *)$rdi)->rip >= {first}"
              f" && ((struct isr_frame *)$rdi)->rip <= {store}")  # fmt: skip
        stop = g.run("continue", timeout=240)
        assert stop["reason"] == "breakpoint-hit", stop
        before = int(g.eval("counter"))
        g.cmd("delete")
        g.cmd(f"break *{store}")
        stop = g.run("continue", timeout=120)
        assert stop["reason"] == "breakpoint-hit" and g.pc() == store
        # the handler added its tick; the store writes the value loaded before it, + 1
        assert int(g.eval("counter")) == before + 1
        assert int(g.eval("$eax")) == int(g.eval("$edx")) + 1 == before + 1
        g.run("stepi")
        # two updates (the tick's and the loop's), one counted: the tick is lost
        assert int(g.eval("counter")) == before + 1
