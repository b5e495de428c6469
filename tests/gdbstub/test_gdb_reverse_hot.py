"""The real gdb going back to a corrupting store made late in a run, on a hot page.

`hotguard` writes the page that holds `guard` at every timer tick; one store, late,
corrupts it. `watch guard` + `reverse-continue` from the panic must stop exactly at that
store (the old value still there, the next instruction makes it the new one), and the
positions either side of it must be consistent.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdb_driver import Gdb, gdb_on_replay
from machines import MACHINES
from rrvmm_cli import rrvmm

GUARD_MAGIC = 0x600DF00D
APPEND = "hz=1000 at=25 ticks=30"


@pytest.fixture(scope="module", params=MACHINES)
def hot_trace(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, guest_dir: Path
) -> Path:
    trace = tmp_path_factory.mktemp("hot") / "hotguard.rrt"
    r = rrvmm(
        "record", *request.param, "--kernel", str(guest_dir / "hotguard.mb"),
        "--append", APPEND, "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert r.status == 3, r.err
    return trace


@pytest.fixture
def gdb(hot_trace: Path, guest_dir: Path) -> Iterator[Gdb]:
    # a checkpoint every 20 exits: several spans to search back through
    with gdb_on_replay(hot_trace, guest_dir / "hotguard.elf", "--checkpoint-every", "20") as g:
        yield g


def _state(g: Gdb) -> tuple[str, str]:
    regs = g.cmd("info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 rip eflags")
    mem = g.cmd("x/64gx 0x106000")
    return regs, hashlib.sha256(mem.encode()).hexdigest()


def test_watch_and_reverse_continue_stops_at_the_store(gdb: Gdb) -> None:
    gdb.cmd("break panic")
    stop = gdb.run("continue", timeout=300)
    assert stop["frame"]["func"] == "panic"
    corrupted = int(gdb.eval("guard"))
    assert corrupted >= 25
    gdb.cmd("delete")
    gdb.cmd("watch guard")
    stop = gdb.run("reverse-continue", timeout=600)
    assert stop["reason"] == "watchpoint-trigger", stop
    assert stop["frame"]["func"] == "stale_store"
    assert int(gdb.eval("guard")) == GUARD_MAGIC  # at the store: not yet written
    insn = gdb.cmd("x/i $pc")
    assert "mov" in insn and "0x106040" in insn, insn  # tick_log[slot] = value
    at_store = _state(gdb)
    gdb.cmd("delete")
    stop = gdb.run("stepi")
    assert int(gdb.eval("guard")) == corrupted
    stop = gdb.run("reverse-stepi")
    assert _state(gdb) == at_store
    out = gdb.cmd("monitor info")
    assert "position: exit" in out


def test_reverse_continue_to_a_breakpoint_in_the_tick_handler(gdb: Gdb) -> None:
    """The hot page's writer itself: the last tick before the store, then back again."""
    gdb.cmd("break stale_store")
    stop = gdb.run("continue", timeout=300)
    assert stop["frame"]["func"] == "stale_store"
    at = _state(gdb)
    ticks = int(gdb.eval("ticks"))
    gdb.cmd("delete")
    gdb.cmd("break timer_tick")
    stop = gdb.run("reverse-continue", timeout=600)
    assert stop["reason"] == "breakpoint-hit", stop
    assert stop["frame"]["func"] == "timer_tick"
    assert int(gdb.eval("ticks")) == ticks - 1  # the handler has not counted this tick yet
    gdb.cmd("delete")
    gdb.cmd("break stale_store")
    stop = gdb.run("continue", timeout=300)
    assert stop["frame"]["func"] == "stale_store"
    assert _state(gdb) == at


@pytest.fixture(scope="module")
def long_soft_trace(tmp_path_factory: pytest.TempPathFactory, guest_dir: Path) -> Path:
    """The default hotguard run (150 ticks, ~1.5e8 instructions) on the software CPU:
    searching all of it backwards takes seconds."""
    trace = tmp_path_factory.mktemp("hot") / "hotguard-long.rrt"
    r = rrvmm(
        "record", "--backend", "soft", "--kernel", str(guest_dir / "hotguard.mb"),
        "-o", str(trace), stdin=None, timeout=600,
    )  # fmt: skip
    assert r.status == 3, r.err
    return trace


def _position(g: Gdb) -> str:
    return next(line for line in g.cmd("monitor info").splitlines() if "position:" in line)


def test_ctrl_c_stops_a_reverse_continue_at_a_consistent_position(
    long_soft_trace: Path, guest_dir: Path
) -> None:
    with gdb_on_replay(long_soft_trace, guest_dir / "hotguard.elf") as g:
        g.cmd("break panic")
        g.run("continue", timeout=600)
        at_panic, panic_pos = _state(g), _position(g)
        g.cmd("delete")
        g.cmd("break *0x1")  # never reached: the search would go back to the start
        responses = g.mi.write("reverse-continue", timeout_sec=2, raise_error_on_timeout=False)
        g.mi.gdb_process.send_signal(signal.SIGINT)  # what Ctrl-C in gdb's terminal does
        while not any(r["type"] == "notify" and r["message"] == "stopped" for r in responses):
            responses += g.mi.get_gdb_response(timeout_sec=5, raise_error_on_timeout=False)
        stop = next(r for r in responses if r["type"] == "notify" and r["message"] == "stopped")
        assert stop["payload"].get("signal-name") == "SIGINT", stop
        g.cmd("delete")
        here, here_pos = _state(g), _position(g)
        assert here_pos != panic_pos  # it went back some way, and says where it is
        # the position is a real one: forward and back again lands on the same state
        g.run("stepi")
        g.run("reverse-stepi")
        assert _state(g) == here and _position(g) == here_pos
        g.cmd("break panic")
        g.run("continue", timeout=600)
        assert _state(g) == at_panic and _position(g) == panic_pos
