"""The daily loop of a kernel developer, in a terminal, with the real gdb (issue 18).

rr's habits: `rrvmm record` (no -o) into the trace store, `rrvmm ls`, `rrvmm replay --gdb`
starting gdb in the same terminal; QEMU's -s -S: `rrvmm run --gdb`; a packed trace debugs
with names after its files are gone. All on the software CPU (fast, and exact).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from rrvmm_cli import rrvmm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gdbstub"))
from gdb_driver import Gdb, free_port  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")

PROMPT = r"\(gdb\) "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private trace store and HOME (no user .gdbinit), colours off for matching."""
    home = tmp_path / "home"
    home.mkdir()
    return dict(os.environ, RRVMM_TRACE_DIR=str(tmp_path / "store"), HOME=str(home), TERM="dumb")


def _spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "rrvmm", *args], env=env, timeout=90, encoding="utf-8",
        dimensions=(50, 250),
    )  # fmt: skip


def _gdb(child: pexpect.spawn, command: str) -> str:
    """Type a gdb command, wait for the next prompt; what it printed, without colours."""
    child.sendline(command)
    child.expect(PROMPT)
    return ANSI.sub("", child.before)


def _quit(child: pexpect.spawn) -> int:
    child.sendline("quit")
    if child.expect([r"\(y or n\)", pexpect.EOF]) == 0:
        child.sendline("y")
        child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_record_ls_replay_gdb_in_a_terminal(env: dict[str, str], guest) -> None:  # noqa: ANN001
    rec = _spawn(env, "record", "--backend", "soft", "--kernel", str(guest("hello")))
    rec.expect("hello, world")
    rec.expect(pexpect.EOF)
    rec.close()
    assert rec.exitstatus == 0
    store = Path(env["RRVMM_TRACE_DIR"])
    assert (store / "hello-0.rrt").is_file()
    assert os.readlink(store / "latest-trace") == "hello-0.rrt"
    assert "hello-0: `rrvmm replay` replays it" in rec.before

    ls = rrvmm("ls", env=env)
    assert ls.status == 0, ls.err
    header, row = ls.out.splitlines()
    assert header.split()[:3] == ["NAME", "KERNEL", "EXITS"]
    cells = row.split()
    assert cells[0] == "*hello-0" and cells[1] == "hello.mb" and int(cells[2]) > 100
    assert "isa-debug-exit" in row and " no " in row  # how it ended; not packed

    g = _spawn(env, "replay", "--gdb")  # no trace: the latest; no port: gdb starts here
    g.expect(PROMPT)
    banner = ANSI.sub("", g.before)
    assert "hello-0.rrt" in banner and "hello.elf" in banner
    assert "Breakpoint 1 at" in _gdb(g, "break kmain")
    assert "breakpoints: 0x" in _gdb(g, "monitor info")  # kept inserted, so the stub knows
    out = _gdb(g, "continue")
    assert "Breakpoint 1, kmain" in out
    out = _gdb(g, "reverse-stepi")
    assert "rt_start" in out  # one instruction back: the call in rt_start
    out = _gdb(g, "goto 10")
    assert "at exit 10" in out and "#0" in out  # gdb shows where exit 10 is, not the old rip
    assert "read-only" in _gdb(g, "set var $rax = 5")
    assert "Writing to memory is not allowed" in _gdb(g, "set var *(int *)0x9000 = 5")
    assert _quit(g) == 0


def test_replay_gdb_with_a_store_name(env: dict[str, str], guest) -> None:  # noqa: ANN001
    for _ in range(2):
        r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("hello")), env=env)
        assert r.status == 0, r.err
    g = _spawn(env, "replay", "--gdb", "hello-0")  # `--gdb NAME`: NAME is the trace
    g.expect(PROMPT)
    assert "hello-0.rrt" in g.before and "hello-1" not in g.before
    assert _quit(g) == 0


def _address(g: Gdb, symbol: str) -> int:
    m = re.search(r"0x[0-9a-f]+", g.eval(f"&{symbol}"))
    assert m is not None
    return int(m.group(0), 16)


@pytest.mark.parametrize(
    ("verb", "backend"),
    [("run", "soft"), ("record", "soft"), pytest.param("record", "kvm", marks=pytest.mark.kvm)],
)
def test_run_gdb_live_from_the_first_instruction(
    verb: str, backend: str, tmp_path: Path, guest_dir: Path
) -> None:
    port = free_port()
    trace = tmp_path / "live.rrt"
    extra = ["-o", str(trace)] if verb == "record" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", verb, "--backend", backend, "--kernel",
         str(guest_dir / "hello.mb"), "--append", "exit=3", f"--gdb=:{port}", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    banner = proc.stderr.readline().decode()
    assert f"127.0.0.1:{port}" in banner and "first instruction" in banner
    g = Gdb(guest_dir / "hello.elf")
    try:
        g.cmd(f"target remote 127.0.0.1:{port}")
        assert g.pc() == _address(g, "_start32")  # nothing ran yet
        g.cmd("break kmain")
        stop = g.run("-exec-continue")
        assert stop["reason"] == "breakpoint-hit" and stop["frame"]["func"] == "kmain"
        assert int(g.eval("magic")) == 0x2BADB002  # the multiboot loader's magic, live
        assert "rt_start" in g.cmd("bt")
        if verb == "record":  # a change the trace does not hold would not replay
            with pytest.raises(RuntimeError, match="while recording"):
                g.cmd("set var $rax = 5")
        else:
            g.cmd("set var $rbx = 0x1234")
            assert int(g.eval("$rbx")) == 0x1234
        stop = g.run("reverse-stepi")
        assert "reverse execution needs a recording" in stop["text"]
        assert g.pc() == _address(g, "kmain")  # it did not move
        g.cmd("delete")
        stop = g.run("-exec-continue")
        assert stop["reason"] == "exited" and stop["exit-code"] == "03"
    finally:
        g.mi.exit()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err  # the guest's own status
    assert b"hello, world" in out
    if verb == "record":
        r = rrvmm("replay", str(trace))
        assert r.status == 0 and "replay matched" in r.err, r.err


@pytest.fixture
def packed_without_originals(tmp_path: Path, guest_dir: Path, env: dict[str, str]) -> Iterator:
    """hello recorded from private copies, packed with its ELF, the copies deleted."""
    work = tmp_path / "work"
    work.mkdir()
    kernel, elf = work / "hello.mb", work / "hello.elf"
    shutil.copyfile(guest_dir / "hello.mb", kernel)
    shutil.copyfile(guest_dir / "hello.elf", elf)
    elf_sha = hashlib.sha256(elf.read_bytes()).hexdigest()
    trace = work / "hello.rrt"
    r = rrvmm("record", "--backend", "soft", "--kernel", str(kernel), "-o", str(trace), env=env)
    assert r.status == 0, r.err
    packed = tmp_path / "hello.packed.rrt"
    r = rrvmm("pack", str(trace), "-o", str(packed), "--symbols", str(elf), env=env)
    assert r.status == 0, r.err
    shutil.rmtree(work)
    yield packed, elf_sha


def test_packed_symbols_in_console_gdb_and_extract(
    packed_without_originals: tuple[Path, str], env: dict[str, str], tmp_path: Path
) -> None:
    packed, elf_sha = packed_without_originals
    r = rrvmm("replay", str(packed), "--console", stdin=b"break kmain\ncontinue\nquit\n", env=env)
    assert r.status == 0, r.err
    assert "symbols from hello.elf (carried by the trace)" in r.out
    assert "kmain" in r.out.split("continue", 1)[1]

    g = _spawn(env, "replay", str(packed), "--gdb")
    g.expect(PROMPT)
    assert "hello.elf" in g.before
    assert "Breakpoint 1 at" in _gdb(g, "break kmain")
    assert "Breakpoint 1, kmain" in _gdb(g, "continue")
    assert _quit(g) == 0

    out = tmp_path / "extracted"
    out.mkdir()
    r = rrvmm("trace", "extract", str(packed), "--symbols", str(out), "--images", str(out))
    assert r.status == 0, r.err
    assert hashlib.sha256((out / "hello.elf").read_bytes()).hexdigest() == elf_sha
    assert (out / "hello.mb").is_file()


def test_replay_leaves_no_terminal_answers_at_the_prompt(tmp_path: Path, guest_dir: Path) -> None:
    """The guest asks where the cursor is (ESC[6n); the terminal (here: this test) answers
    on input. The replay must neither echo the answers nor leave them for the shell."""
    trace = tmp_path / "echo.rrt"
    r = rrvmm(
        "record", "--backend", "soft", "--kernel", str(guest_dir / "echo.mb"), "-o",
        str(trace), stdin=b"\x1b[6n\nquit\n",
    )  # fmt: skip
    assert r.status == 0, r.err
    after = "import sys; print('READY', flush=True); print('LINE %r' % sys.stdin.readline())"
    script = f'{sys.executable} -m rrvmm replay {trace}; {sys.executable} -c "{after}"'
    child = pexpect.spawn("/bin/sh", ["-c", script], timeout=60, encoding="utf-8")
    child.expect(re.escape("\x1b[6n"))
    child.send("\x1b[5;5R")  # what a terminal answers
    child.expect("READY")  # the replay is over; the next program reads a line
    seen = child.before
    child.send("\n")
    child.expect(r"LINE (.*)\r?\n")
    result = child.match.group(1).strip()
    child.expect(pexpect.EOF)
    assert "5;5R" not in seen  # not echoed
    assert result == repr("\n")  # nor left for the shell


def test_kill_from_gdb_ends_a_live_run(guest_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", "run", "--backend", "soft", "--kernel",
         str(guest_dir / "hello.mb"), f"--gdb=:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    proc.stderr.readline()
    g = Gdb(guest_dir / "hello.elf")
    try:
        g.cmd(f"target remote 127.0.0.1:{port}")
        g.run("-exec-step-instruction")
        g.cmd("kill")
    finally:
        g.mi.exit()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"killed from gdb" in err
    assert b"hello, world" not in out  # it did not run on


def test_ctrl_a_x_quits_while_waiting_for_gdb(guest_dir: Path) -> None:
    port = free_port()
    child = pexpect.spawn(
        sys.executable, ["-m", "rrvmm", "run", "--backend", "soft", "--kernel",
                         str(guest_dir / "hello.mb"), f"--gdb=:{port}"],
        timeout=30, encoding="utf-8",
    )  # fmt: skip
    child.expect("first instruction")
    child.send("\x01x")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "before gdb came" in child.before
