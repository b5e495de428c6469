"""The real gdb 13 against GdbServer over the fake target: does gdb understand our replies?"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gdbstub_fake import BEGIN_PC, END_PC, FakeTarget
from pygdbmi.gdbcontroller import GdbController

from rrvmm.gdbstub.server import GdbServer
from rrvmm.target import Stop, StopKind, WatchKind

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")

Record = dict[str, Any]


class MiGdb:
    """gdb over MI: ``cmd`` for commands that end in ^done, ``run`` for ones that stop."""

    def __init__(self) -> None:
        self.mi = GdbController(
            ["gdb", "--nx", "--quiet", "--interpreter=mi3"],
            time_to_check_for_additional_output_sec=0.05,
        )
        self.cmd("set pagination off")
        self.cmd("set confirm off")

    @staticmethod
    def text(records: list[Record], kinds: tuple[str, ...] = ("console", "target")) -> str:
        return "".join(r["payload"] for r in records if r["type"] in kinds and r["payload"])

    def _until(self, command: str, done: Any, timeout: float) -> list[Record]:
        records = self.mi.write(command, timeout_sec=timeout, raise_error_on_timeout=False)
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command}: {records}")
            records += self.mi.get_gdb_response(timeout_sec=1, raise_error_on_timeout=False)
        return records

    def cmd_records(self, command: str, timeout: float = 20) -> list[Record]:
        return self._until(command, lambda rs: any(r["type"] == "result" for r in rs), timeout)

    def cmd(self, command: str, timeout: float = 20) -> str:
        records = self.cmd_records(command, timeout)
        result = next(r for r in records if r["type"] == "result")
        if result["message"] == "error":
            raise RuntimeError(result["payload"]["msg"])
        return self.text(records)

    def error(self, command: str) -> str:
        records = self.cmd_records(command)
        result = next(r for r in records if r["type"] == "result")
        assert result["message"] == "error", records
        return result["payload"]["msg"]

    def run(self, command: str, timeout: float = 20) -> tuple[Record, str]:
        """An execution command: the *stopped payload and the console text."""

        def stopped(rs: list[Record]) -> bool:
            if any(r["type"] == "result" and r["message"] == "error" for r in rs):
                raise RuntimeError(f"{command}: {rs}")
            return any(r["type"] == "notify" and r["message"] == "stopped" for r in rs)

        records = self._until(command, stopped, timeout)
        stop = next(r for r in records if r["type"] == "notify" and r["message"] == "stopped")
        return stop["payload"] or {}, self.text(records)

    def pc(self) -> int:
        out = self.cmd("info registers rip")
        return int(out.split()[1], 16)

    def close(self) -> None:
        self.mi.exit()


class Session:
    def __init__(self, target: FakeTarget, *settings: str) -> None:
        self.target = target
        self.server = GdbServer(target, port=0)
        self.thread = threading.Thread(target=self.server.serve_one, daemon=True)
        self.thread.start()
        self.gdb = MiGdb()
        for s in settings:
            self.gdb.cmd(s)
        self.gdb.cmd("set architecture i386:x86-64")
        self.gdb.cmd(f"target remote 127.0.0.1:{self.server.address[1]}")

    def close(self) -> None:
        try:
            self.gdb.close()
        finally:
            self.server.close()
            self.thread.join(5)


@pytest.fixture
def session() -> Iterator[Session]:
    s = Session(FakeTarget())
    try:
        yield s
    finally:
        s.close()


def value(text: str, name: str) -> int:
    m = re.search(rf"^{name}\s+(0x[0-9a-f]+)", text, re.M)
    assert m, (name, text)
    return int(m.group(1), 16)


def test_registers(session: Session) -> None:
    g = session.gdb
    assert g.pc() == BEGIN_PC
    regs = g.cmd("info registers")
    expected = session.target.registers
    for name in ("rax", "rbx", "rsp", "r15", "rip", "eflags", "cs", "ss", "gs"):
        assert value(regs, name) == expected[name], name
    assert "[ PF ZF IF ]" in regs  # eflags decoded through the XML flags type
    # the system registers are not in 'info registers' by default: ask for them
    sys_regs = g.cmd("info registers fs_base gs_base k_gs_base cr0 cr2 cr3 cr4 cr8 efer")
    for name in ("fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer"):
        assert value(sys_regs, name) == expected[name], name
    assert "[ SCE LME LMA NXE ]" in sys_regs
    assert "PG" in sys_regs
    # registers the target does not have read as zeros
    assert "uint128 = 0" in g.cmd("print $xmm15")
    assert g.cmd("print $st0").strip().endswith("= 0")
    assert g.cmd("print $mxcsr").strip().endswith("= [ ]")


def test_gdb_numbers_registers_as_we_do(session: Session) -> None:
    table = session.gdb.cmd("maint print remote-registers")
    rows = {}
    for line in table.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[-2].isdigit():
            rows[parts[0]] = int(parts[-2])
    from rrvmm.gdbstub.regs import REGISTERS

    for i, reg in enumerate(REGISTERS):
        assert rows.get(reg.name) == i, reg.name


def test_memory(session: Session) -> None:
    out = session.gdb.cmd("x/4gx 0x2000")
    assert re.findall(r"0x[0-9a-f]{16}", out) == [f"0x{0x1000 + i:016x}" for i in range(4)]
    assert "Cannot access memory at address 0x10" in session.gdb.error("x/gx 0x10")


def test_step_continue_reverse(session: Session) -> None:
    g = session.gdb
    g.run("stepi")
    assert g.pc() == BEGIN_PC + 1
    stop, _ = g.run("reverse-stepi")
    assert g.pc() == BEGIN_PC
    stop, text = g.run("reverse-stepi")
    assert "No more reverse-execution history." in text
    assert g.pc() == BEGIN_PC
    g.cmd("break *0x1150")
    stop, _ = g.run("continue")
    assert stop["reason"] == "breakpoint-hit" and stop["bkptno"] == "1"
    assert g.pc() == 0x1150
    stop, text = g.run("continue")
    assert "No more reverse-execution history." in text
    assert g.pc() == END_PC
    stop, _ = g.run("reverse-continue")
    assert stop["reason"] == "breakpoint-hit"
    assert g.pc() == 0x1150
    # gdb inserts breakpoints while running and takes them out while stopped
    assert (0x1150, False, None) in session.target.ever_set
    assert session.target.breakpoints == set()
    # the resumes gdb asked for: forward/backward, step/continue
    assert (True, True) in session.target.resumes
    assert (True, False) in session.target.resumes


def test_hardware_breakpoint(session: Session) -> None:
    g = session.gdb
    g.cmd("hbreak *0x1160")
    stop, _ = g.run("continue")
    assert stop["reason"] == "breakpoint-hit"
    assert g.pc() == 0x1160
    assert (0x1160, True, None) in session.target.ever_set


def test_watchpoints(session: Session) -> None:
    g = session.gdb
    t = session.target

    def write_hit(target: FakeTarget) -> Stop:
        target.memory[0x1000:0x1008] = (99).to_bytes(8, "little")
        target.registers["rip"] = 0x1120
        return Stop(StopKind.WATCHPOINT, 0x2000, WatchKind.WRITE)

    g.cmd("watch *(long *)0x2000")
    t.script.append(write_hit)
    stop, text = g.run("continue")
    assert stop["reason"] == "watchpoint-trigger"
    assert stop["value"] == {"old": "4096", "new": "99"}
    assert g.pc() == 0x1120
    assert (0x2000, 8, WatchKind.WRITE) in t.ever_set
    g.cmd("delete")

    g.cmd("rwatch *(int *)0x2008")
    t.script.append(Stop(StopKind.WATCHPOINT, 0x2008, WatchKind.READ))
    stop, _ = g.run("continue")
    assert stop["reason"] == "read-watchpoint-trigger"
    assert stop["value"] == {"value": "4097"}
    assert (0x2008, 4, WatchKind.READ) in t.ever_set
    g.cmd("delete")

    g.cmd("awatch *(short *)0x2010")
    t.script.append(Stop(StopKind.WATCHPOINT, 0x2010, WatchKind.ACCESS))
    stop, _ = g.run("reverse-continue")
    assert stop["reason"] == "access-watchpoint-trigger"
    assert (0x2010, 2, WatchKind.ACCESS) in t.ever_set


def test_read_only_target_refuses_writes(session: Session) -> None:
    g = session.gdb
    assert "replay is read-only" in g.error("set $rax = 5")  # gdb shows the stub's reason
    assert "Cannot access memory at address 0x2000" in g.error("set {long}0x2000 = 7")
    assert value(g.cmd("info registers rax"), "rax") == 0x1111111111111111


def test_writable_target() -> None:
    s = Session(FakeTarget(writable=True))
    try:
        s.gdb.cmd("set $rax = 5")
        assert s.target.registers["rax"] == 5
        assert value(s.gdb.cmd("info registers rax"), "rax") == 5
        s.gdb.cmd("set {long}0x2000 = 0x2a")
        assert s.target.read_memory(0x2000, 8) == (0x2A).to_bytes(8, "little")
        assert "0x000000000000002a" in s.gdb.cmd("x/gx 0x2000")
    finally:
        s.close()


def test_monitor(session: Session) -> None:
    out = session.gdb.cmd("monitor info")
    assert "position Position(exit_index=0, instructions=0)" in out
    assert session.target.monitor_commands == ["info"]
    assert "error: no such thing" in session.gdb.cmd("monitor fail")


def test_ctrl_c() -> None:
    target = FakeTarget(hang=True)
    s = Session(target, "-gdb-set mi-async on")
    try:
        records = s.gdb.cmd_records("-exec-continue")
        assert any(r["message"] == "running" for r in records if r["type"] == "result")
        assert target.running.wait(10)
        stop, _ = s.gdb.run("-exec-interrupt")
        assert stop["reason"] == "signal-received" and stop["signal-name"] == "SIGINT"
        assert target.interrupts == 1
        target.hang = False
        s.gdb.run("-exec-step-instruction")
        assert s.gdb.pc() == BEGIN_PC + 1
    finally:
        s.close()


def test_exit() -> None:
    target = FakeTarget()
    target.script.append(Stop(StopKind.EXITED, status=3))
    s = Session(target)
    try:
        stop, _ = s.gdb.run("continue")
        assert stop["reason"] == "exited" and stop["exit-code"] == "03"
    finally:
        s.close()


def test_ack_mode_session() -> None:
    """Everything still works when gdb keeps acknowledging packets."""
    s = Session(FakeTarget(), "set remote noack-packet off")
    try:
        assert s.gdb.pc() == BEGIN_PC
        s.gdb.run("stepi")
        assert s.gdb.pc() == BEGIN_PC + 1
        assert "0x0000000000001000" in s.gdb.cmd("x/gx 0x2000")
    finally:
        s.close()


def test_detach_ends_serve_one(session: Session) -> None:
    session.gdb.cmd("detach")
    session.thread.join(5)
    assert not session.thread.is_alive()
