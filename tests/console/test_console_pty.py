"""End to end: `rrvmm replay TRACE --console --symbols ELF` in a real pseudo-terminal.

The console runs as a user starts it; the test types into the terminal as a person would
(waiting for each answer, Tab for completion) and reads the screen output. It answers the
terminal's cursor-position requests (CPR) as a terminal does, so prompt_toolkit draws its
bottom toolbar. A second test feeds the same CLI a file of commands on standard input.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from rrvmm_cli import rrvmm

pytestmark = pytest.mark.kvm

_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78])")


def _take_terminal() -> None:
    """In the child: a session of its own with the pty as controlling terminal (Ctrl-C)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command in a pseudo-terminal of ``rows`` x ``cols``."""

    def __init__(self, argv: list[str], rows: int = 40, cols: int = 160) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=_take_terminal
        )
        os.close(slave)
        self.fd = master
        self.raw = b""

    def _pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
            return
        self.raw += data
        for _ in range(data.count(b"\x1b[6n")):  # where is the cursor? near the top
            os.write(self.fd, b"\x1b[2;1R")

    @property
    def text(self) -> str:
        return _ANSI.sub(b"", self.raw).decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self._pump(0.2)
                if needle in self.text:
                    break
                raise AssertionError(f"no {needle!r} on the terminal:\n{self.text}")
            self._pump(0.05)
        return self.text

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._pump(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        status = self.proc.wait()
        os.close(self.fd)
        return status


def test_the_console_in_a_terminal(corrupt_trace: Path, corrupt_elf: Path) -> None:
    term = Terminal(
        [sys.executable, "-m", "rrvmm", "replay", str(corrupt_trace), "--console",
         "--symbols", str(corrupt_elf)]
    )  # fmt: skip
    try:
        term.wait_for("(rrvmm)")
        term.wait_for("exit 0/")  # the bottom toolbar: position, RIP and symbol...
        term.wait_for("rip 0x10000c <_start32> | start of the recording | serial: -")
        term.type("break pan\t")  # Tab completes the symbol
        term.wait_for("break panic")
        term.type("\r")
        term.wait_for("Breakpoint 1 at 0x101da0 <panic>")
        term.type("continue\r")
        term.wait_for("Breakpoint 1, 0x0000000000101da0 in panic () [exit ")
        term.wait_for("=> 0x101da0 <panic>:")
        term.wait_for("| serial: check_table: sum=25808 guard_value=0x0000006c")  # toolbar
        term.type("watch guard_value\r")
        term.wait_for("Hardware watchpoint 2: guard_value (4 bytes at 0x106080)")
        term.type("rcontinue\r")
        term.wait_for("Watchpoint 2: guard_value 0x6c -> 0x600df00d")
        out = term.wait_for("=> 0x101ce2 <buggy_store+2>:\tmovl   %esi,0x106040(,%rdi,8)")
        assert "0x0000000000101ce2 in buggy_store () [exit " in out
        term.wait_for("rip 0x101ce2 <buggy_store+2> | IO_OUT port 0x3f8")  # toolbar
        term.type("nonsense\r")
        term.wait_for('Undefined command: "nonsense". Try "help".')
        term.type("x/1wx &guard_value\r")
        term.wait_for("0x106080 <guard_value>:\t0x600df00d")
        term.type("quit\r")
    finally:
        status = term.close()
    assert status == 0, term.text


def test_ctrl_c_stops_a_long_command(corrupt_trace: Path, corrupt_elf: Path) -> None:
    term = Terminal(
        [sys.executable, "-m", "rrvmm", "replay", str(corrupt_trace), "--console",
         "--symbols", str(corrupt_elf)]
    )  # fmt: skip
    try:
        term.wait_for("(rrvmm)")
        term.type("stepi 1000000\r")  # single steps through the whole recording: seconds
        term.wait_for("stepi 1000000")
        time.sleep(0.2)
        term.type("\x03")
        term.wait_for("Interrupted.")
        out = term.wait_for(" () [exit ")
        assert "No more reverse-execution history" not in out
        term.type("break panic\r")
        term.wait_for("Breakpoint 1 at ")
        term.type("continue\r")  # runs on normally: no interrupt left over
        term.wait_for("Breakpoint 1, 0x0000000000101da0 in panic () [exit ")
        term.type("quit\r")
    finally:
        status = term.close()
    assert status == 0, term.text


def test_commands_from_standard_input(corrupt_trace: Path, corrupt_elf: Path) -> None:
    script = b"break panic\ncontinue\nwatch guard_value\nrcontinue\nbogus\nserial 1\n"
    r = rrvmm(
        "replay", str(corrupt_trace), "--console", "--symbols", str(corrupt_elf), stdin=script
    )
    assert r.status == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith(f"rrvmm replay console: {corrupt_trace.name}: ")
    i = lines.index("(rrvmm) rcontinue")
    assert lines[i + 1] == "Watchpoint 2: guard_value 0x6c -> 0x600df00d"
    assert lines[i + 2].startswith("0x0000000000101ce2 in buggy_store () [exit ")
    assert lines[lines.index("(rrvmm) bogus") + 1] == 'Undefined command: "bogus". Try "help".'
    assert lines[-1] == "corrupt: updating 8 entries"


def test_the_console_replays_on_the_cpu_asked_for(corrupt_trace: Path, corrupt_elf: Path) -> None:
    """A KVM recording debugged on the software CPU (as with --gdb): same stop, same state."""
    script = b"break panic\ncontinue\nregs\n"
    after = {}
    for backend in ("kvm", "soft"):
        r = rrvmm(
            "replay", str(corrupt_trace), "--console", "--backend", backend,
            "--symbols", str(corrupt_elf), stdin=script,
        )  # fmt: skip
        assert r.status == 0, r.err
        lines = r.out.splitlines()
        assert f"exits on the {backend} CPU" in lines[0]
        after[backend] = lines[lines.index("(rrvmm) continue") + 1 :]
    assert " in panic () [exit " in after["soft"][0]
    assert after["soft"] == after["kvm"]


def test_a_bad_symbol_file(corrupt_trace: Path, tmp_path: Path) -> None:
    r = rrvmm("replay", str(corrupt_trace), "--console", "--symbols", str(tmp_path / "x.elf"))
    assert r.status == 66
    assert r.err.strip() == f"rrvmm: --symbols: symbol file not found: {tmp_path / 'x.elf'}"
