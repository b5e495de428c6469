"""The real gdb against a replayed repo guest: forward and backward."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdb_driver import Gdb, gdb_on_replay
from machines import MACHINES
from rrvmm_cli import rrvmm


@pytest.fixture(scope="module", params=MACHINES)
def corrupt_trace(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, guest_dir: Path
) -> Path:
    """The planted-corruption guest recorded on each backend (replayed on the same one)."""
    trace = tmp_path_factory.mktemp("gdb") / "corrupt.rrt"
    r = rrvmm(
        "record", *request.param, "--kernel", str(guest_dir / "corrupt.mb"),
        "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert r.status == 3, r.err
    return trace


@pytest.fixture
def gdb(corrupt_trace: Path, guest_dir: Path) -> Iterator[Gdb]:
    with gdb_on_replay(corrupt_trace, guest_dir / "corrupt.elf") as g:
        yield g


def _state(g: Gdb) -> tuple[str, str]:
    regs = g.cmd("info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 rip eflags")
    mem = g.cmd("x/64gx 0x106000")
    return regs, hashlib.sha256(mem.encode()).hexdigest()


def test_forward_session(gdb: Gdb) -> None:
    gdb.cmd("break buggy_store")
    stop = gdb.run("continue")
    assert stop["reason"] == "breakpoint-hit" and stop["frame"]["func"] == "buggy_store"
    assert gdb.eval("idx") == "0"
    assert gdb.eval("guard_value") == "1611526157"
    regs = gdb.cmd("info registers")
    for name in ("rip", "cs", "ss", "ds", "fs_base", "gs_base", "cr0", "cr3", "efer"):
        assert name in regs, regs
    x = gdb.cmd("x/8gx &table")
    assert x.count("0x") >= 9
    stop = gdb.run("finish")
    # update_entry tail-calls buggy_store (a jmp), so finish returns into update_all
    assert stop["frame"]["func"] == "update_all"
    stop = gdb.run("next")
    assert stop["reason"] == "end-stepping-range"
    stop = gdb.run("step")
    assert stop["frame"]["func"] in ("update_entry", "update_all", "buggy_store")
    stop = gdb.run("stepi")
    assert stop["reason"] == "end-stepping-range"


def test_watch_and_reverse_continue_to_the_writer(gdb: Gdb) -> None:
    gdb.cmd("break panic")
    stop = gdb.run("continue")
    assert stop["frame"]["func"] == "panic"
    assert gdb.eval("guard_value") == "108"
    gdb.cmd("watch guard_value")
    stop = gdb.run("reverse-continue")
    assert stop["reason"] == "watchpoint-trigger", stop
    assert stop["frame"]["func"] == "buggy_store"
    # stopped at the store itself: the old value is back, the instruction writes it
    assert gdb.eval("guard_value") == "1611526157"
    insn = gdb.cmd("x/i $pc")
    assert "mov" in insn and "0x106040" in insn
    first = _state(gdb)
    stop = gdb.run("stepi")
    assert gdb.eval("guard_value") == "108"
    stop = gdb.run("reverse-stepi")
    assert _state(gdb) == first


def test_reverse_step_next_finish(gdb: Gdb) -> None:
    gdb.cmd("break panic")
    stop = gdb.run("continue")
    assert stop["frame"]["func"] == "panic"
    stop = gdb.run("reverse-step")
    assert stop["reason"] == "end-stepping-range"
    assert stop["frame"]["func"] == "check_table"  # back to the line that called panic
    line = int(stop["frame"]["line"])
    stop = gdb.run("reverse-next")
    assert stop["reason"] == "end-stepping-range"
    assert int(stop["frame"]["line"]) < line
    gdb.cmd("delete")
    gdb.cmd("break buggy_store")
    stop = gdb.run("reverse-continue")
    assert stop["frame"]["func"] == "buggy_store"
    assert gdb.eval("idx") == "8"  # the last call before the check
    stop = gdb.run("reverse-finish")
    # back to the call in update_all (buggy_store is reached from it by a tail call)
    assert stop["frame"]["func"] in ("update_all", "update_entry")
    assert "call" in gdb.cmd("x/i $pc") or "jmp" in gdb.cmd("x/i $pc")


def test_back_and_forth_is_exact(gdb: Gdb) -> None:
    gdb.cmd("break buggy_store if idx == 5")
    gdb.run("continue")
    first = _state(gdb)
    gdb.cmd("delete")
    gdb.cmd("break check_table")
    gdb.run("continue")
    gdb.cmd("delete")
    gdb.cmd("break buggy_store if idx == 5")
    gdb.run("reverse-continue")
    assert _state(gdb) == first
    gdb.cmd("delete")
    gdb.cmd("break check_table")
    gdb.run("continue")
    gdb.cmd("delete")
    gdb.cmd("break buggy_store if idx == 5")
    gdb.run("reverse-continue")
    assert _state(gdb) == first


def test_start_and_end_of_the_recording(gdb: Gdb) -> None:
    stop = gdb.run("reverse-continue")
    assert "No more reverse-execution history" in stop["text"], stop
    assert stop["frame"]["func"] == "_start32"  # the multiboot entry point
    stop = gdb.run("continue")
    assert "No more reverse-execution history" in stop["text"], stop
    assert stop["frame"]["func"] == "rt_exit"  # just after the write to isa-debug-exit
    out = gdb.cmd("monitor info")
    assert "position: exit" in out and "checkpoints:" in out
    assert "IO_OUT" in gdb.cmd("monitor exits 1 5")
