"""The console's commands, parsing and formatting over a stand-in ReplayTarget (no KVM)."""

from __future__ import annotations

import _thread
import io
import threading
from pathlib import Path

import pytest
from console_driver import LiveConsole, run_script
from console_fake import FakeTarget
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from rrvmm.console.app import ConsoleCompleter, interruptible_runner, load_symbols, run_console
from rrvmm.console.commands import COMMANDS, Console, ConsoleQuit, lookup_command
from rrvmm.console.symbols import SymbolTable
from rrvmm.errors import RrvmmError
from rrvmm.target import Position, RecordedExit, ReplayTarget, Stop, StopKind, WatchKind

EXITS = [
    RecordedExit(1, "IO_OUT", 0x3F8, 1, 0x68, 0x1002D5),
    RecordedExit(2, "IO_IN", 0x3FD, 1, 0x60, 0x1002C8),
    RecordedExit(3, "MMIO_WRITE", 0xFEE000B0, 4, bytes(4), 0x100500),
    RecordedExit(4, "HLT", 0, 0, 0, 0x100600),
]


@pytest.fixture
def fake(corrupt_elf: Path) -> FakeTarget:
    return FakeTarget(corrupt_elf, EXITS)


@pytest.fixture
def con(fake: FakeTarget, corrupt_symbols: SymbolTable) -> Console:
    return Console(fake, corrupt_symbols)


def addr(symbols: SymbolTable, name: str) -> int:
    sym = symbols.lookup(name)
    assert sym is not None
    return sym.address


def test_the_fake_is_a_replay_target(fake: FakeTarget) -> None:
    """The stand-in implements the whole protocol the console drives, and no more is
    needed: the console tests pass over it, and it has none of the engine's insides."""
    assert isinstance(fake, ReplayTarget)


def test_command_lookup() -> None:
    assert lookup_command("ne").name == "next-exit"
    assert lookup_command("pe").name == "prev-exit"
    assert lookup_command("rsi").name == "rstepi"
    assert lookup_command("rc").name == "rcontinue"
    assert lookup_command("b").name == "break"
    assert lookup_command("q").name == "quit"
    assert lookup_command("ser").name == "serial"  # a unique prefix
    assert lookup_command("disassemble").name == "disas"
    names = [n for c in COMMANDS for n in (c.name, *c.aliases)]
    assert len(names) == len(set(names))


def test_errors_are_one_line(con: Console) -> None:
    cases = {
        "frob": 'Undefined command: "frob". Try "help".',
        "s": 'Ambiguous command "s": serial, stepi.',
        "break": "Usage: break ADDR|SYMBOL",
        "break nosuch": 'No symbol "nosuch" in current context.',
        "break 0xzz": 'Invalid number "0xzz".',
        "break panic+zz": 'Invalid number "zz".',
        "break (x)": 'Invalid address "(x)".',
        "x $foo": 'Invalid register "$foo".',
        "x 0x7fff00000000": "Cannot access memory at address 0x7fff00000000",
        "x/4q table": 'Invalid format letter "q": sizes b h w g, formats x d u.',
        "si 0": "The count must be at least 1, not 0.",
        "goto": "Usage: goto EXIT [INSNS]",
        "goto 99": "The recording has 4 exits (0 is the start).",
        "goto -1": "Exit numbers and instruction counts are not negative.",
        "continue now": '"continue" takes no arguments.',
        "delete 3": "No breakpoint number 3.",
        "info frob": 'Undefined info command: "frob". Try: info breakpoints|watchpoints|position'
        "|registers|symbol|checkpoints.",
        "regs foo": 'Invalid register "foo".',
        "stepi/2": 'The "stepi" command does not take "/2".',
        "monitor frob": "Cannot do that in the replay: unknown monitor command 'frob'",
        "watch 0x7fff00000000": "Cannot access memory at address 0x7fff00000000",
        "exits 1 0": "The count must be at least 1, not 0.",
    }
    for line, want in cases.items():
        assert con.execute(line) == want, line


def test_no_symbols(fake: FakeTarget) -> None:
    con = Console(fake, None)
    assert con.execute("break panic").startswith('No symbol "panic": no symbol table is loaded')
    assert con.execute("break 0x101da0") == "Breakpoint 1 at 0x101da0"
    assert con.complete("break pa") == []
    assert "no symbols" in con.banner()


def test_addresses(con: Console, corrupt_symbols: SymbolTable) -> None:
    panic = addr(corrupt_symbols, "panic")
    assert con.resolve("panic") == (panic, corrupt_symbols.lookup("panic"))
    assert con.resolve("panic+4") == (panic + 4, None)
    assert con.resolve("panic-0x10") == (panic - 16, None)
    assert con.resolve("*0x101da0")[0] == 0x101DA0
    assert con.resolve("&guard_value")[0] == addr(corrupt_symbols, "guard_value")
    assert con.resolve("4096")[0] == 4096
    assert con.resolve("$rip")[0] == 0x101CE2
    assert con.resolve("$pc+7")[0] == 0x101CE9
    assert con.resolve("$rsp")[0] == 0x10AD88


def test_breakpoints_and_watchpoints_are_numbered(
    con: Console, fake: FakeTarget, corrupt_symbols: SymbolTable
) -> None:
    panic = addr(corrupt_symbols, "panic")
    guard = addr(corrupt_symbols, "guard_value")
    table = addr(corrupt_symbols, "table")
    assert con.execute("b panic") == f"Breakpoint 1 at {panic:#x} <panic>"
    also = f"Breakpoint 2 at {panic:#x} <panic> (also breakpoint 1)"
    assert con.execute("break *0x101da0") == also
    assert con.execute("watch guard_value") == (
        f"Hardware watchpoint 3: guard_value (4 bytes at {guard:#x})"
    )
    assert con.execute("rwatch table") == (
        f"Hardware read watchpoint 4: table (64 bytes at {table:#x})"
    )
    assert con.execute("awatch table+8 2") == (
        f"Hardware access (read/write) watchpoint 5: table+8 (2 bytes at {table + 8:#x})"
    )
    assert con.execute("watch 0x106000").endswith("(8 bytes at 0x106000)")
    assert con.execute("watch guard_value").startswith("Hardware watchpoint 7: guard_value")
    assert fake.breakpoints == {panic}
    assert sorted(fake.watches, key=str) == sorted(
        [
            (guard, 4, WatchKind.WRITE),
            (table, 64, WatchKind.READ),
            (table + 8, 2, WatchKind.ACCESS),
            (0x106000, 8, WatchKind.WRITE),
            (guard, 4, WatchKind.WRITE),
        ],
        key=str,
    )
    table_text = con.execute("info breakpoints")
    assert table_text.splitlines()[0].split() == ["Num", "Type", "Address", "What"]
    assert f"1       breakpoint       {panic:#018x} <panic>" in table_text
    assert "4       read watchpoint  " in table_text and "table (64 bytes)" in table_text
    assert con.execute("delete 1") == "Deleted 1."
    assert fake.breakpoints == {panic}  # breakpoint 2 is still there
    assert con.execute("delete 2 3") == "Deleted 2, 3."
    assert fake.breakpoints == set()
    assert (guard, 4, WatchKind.WRITE) in fake.watches  # watchpoint 7 still watches it
    assert con.execute("delete") == "Deleted all breakpoints and watchpoints (4)."
    assert fake.watches == []
    assert con.execute("info b") == "No breakpoints or watchpoints."
    assert con.execute("b panic").startswith("Breakpoint 8 at")  # numbers go on, as in gdb


def test_stop_reports(con: Console, fake: FakeTarget, corrupt_symbols: SymbolTable) -> None:
    panic = addr(corrupt_symbols, "panic")
    guard = addr(corrupt_symbols, "guard_value")
    con.execute("break panic")
    con.execute("watch guard_value")
    fake.regs["rip"] = panic
    fake.pos = Position(3, 25)
    fake.stops.append(Stop(StopKind.BREAKPOINT, panic, hardware=True))
    out = con.execute("continue").splitlines()
    assert out == [
        f"Breakpoint 1, {panic:#018x} in panic () [exit 3 +25]",
        f"=> {panic:#x} <panic>:\tpushq  %rbp",
    ]
    fake.stops.append(Stop(StopKind.WATCHPOINT, guard, WatchKind.WRITE))
    out = con.execute("rc").splitlines()
    assert out[0] == "Watchpoint 2: guard_value = 0x600df00d"  # the ELF image does not change
    assert out[1] == f"{panic:#018x} in panic () [exit 3 +25]"
    fake.stops.append(Stop(StopKind.REPLAY_BEGIN))
    assert con.execute("rc").splitlines()[0] == (
        "No more reverse-execution history (start of the recording)."
    )
    fake.end_reason = "guest wrote 0x3 to isa-debug-exit"
    fake.stops.append(Stop(StopKind.REPLAY_END))
    out = con.execute("c").splitlines()
    assert out[:2] == [
        "No more reverse-execution history (end of the recording).",
        "The guest ended: guest wrote 0x3 to isa-debug-exit",
    ]
    fake.stops.append(Stop(StopKind.INTERRUPTED))
    assert con.execute("c").splitlines()[0] == "Interrupted."
    info = con.execute("info breakpoints")
    assert "breakpoint already hit 1 time" in info
    assert "hw watchpoint already hit 1 time" in info


def test_stepping_and_exits(con: Console, fake: FakeTarget) -> None:
    fake.pos = Position(2, 3)
    out = con.execute("si 2")
    assert fake.pos == Position(2, 5)
    assert out == "=> 0x101ce2 <buggy_store+2>:\tmovl   %esi,0x106040(,%rdi,8)"
    assert con.execute("") == out  # an empty line repeats it
    assert fake.pos == Position(2, 7)
    con.execute("rsi 4")
    assert fake.pos == Position(2, 3)
    assert ("goto", Position(2, 3)) in fake.calls  # straight there, no step by step
    out = con.execute("rsi 5")  # back over exit 2 (the fake has 6 instructions before it)
    assert fake.pos == Position(1, 4)
    assert out.splitlines()[0] == "[exit 2: IO_IN port 0x3fd size 1 value 0x60]"
    fake.pos = Position(2, 3)
    assert con.execute("pe").startswith("exit 2 of 4: IO_IN port 0x3fd size 1 value 0x60")
    assert con.execute("pe").startswith("exit 1 of 4: IO_OUT port 0x3f8 size 1 value 0x68")
    assert con.execute("ne 2").startswith(
        "exit 3 of 4: MMIO_WRITE addr 0xfee000b0 size 4 value 0x0"
    )
    assert con.execute("ne 9").startswith("exit 4 of 4: HLT")
    assert con.execute("ne").startswith("No more reverse-execution history (end of the")
    assert con.execute("goto 0").startswith("exit 0 of 4: the start of the recording")
    assert con.execute("pe").startswith("No more reverse-execution history (start of the")
    con.execute("goto 2 3")
    assert fake.pos == Position(2, 3)


def test_exits_table(con: Console, fake: FakeTarget) -> None:
    fake.pos = Position(2, 0)
    lines = con.execute("exits").splitlines()
    assert lines[0].split() == ["exit", "kind", "port/addr", "size", "value", "rip"]
    assert lines[1].split()[:6] == ["=>", "2", "IO_IN", "port", "0x3fd", "1"]
    assert lines[1].endswith("0x1002c8 <serial_putc+8>")
    assert lines[2].split()[:5] == ["3", "MMIO_WRITE", "0xfee000b0", "4", "0x0"]
    assert lines[3].split()[:5] == ["4", "HLT", "-", "-", "-"]
    assert len(con.execute("exits 1 2").splitlines()) == 3
    assert con.execute("exits 9") == "No exits from 9 (the recording has 4)."


def test_memory_registers_and_disassembly(con: Console, corrupt_symbols: SymbolTable) -> None:
    table = addr(corrupt_symbols, "table")
    guard = addr(corrupt_symbols, "guard_value")
    out = con.execute(f"x {table:#x} 3").splitlines()
    assert out == [
        f"{table:#x} <table>:\t0x00000000ffffffff\t0x0000000000000000",
        f"{table + 16:#x} <table+16>:\t0x0000000000000000",
    ]
    assert con.execute("x/1wx &guard_value") == f"{guard:#x} <guard_value>:\t0x600df00d"
    assert con.execute("x/2wd table") == f"{table:#x} <table>:\t-1\t0"
    assert con.execute("x/2wu table") == f"{table:#x} <table>:\t4294967295\t0"
    assert con.execute("x/3bx guard_value") == f"{guard:#x} <guard_value>:\t0x0d\t0xf0\t0x0d"
    regs = con.execute("regs").splitlines()
    assert regs[0].split() == ["rax", "0x0", "0"]
    rip = next(r for r in regs if r.startswith("rip"))
    assert rip.split() == ["rip", "0x101ce2", "0x101ce2", "<buggy_store+2>"]
    assert next(r for r in regs if r.startswith("eflags")).endswith("[ PF ZF IF ]")
    assert next(r for r in regs if r.startswith("cr0")).endswith("[ PG ET PE ]")
    assert {r.split()[0] for r in regs} >= {"cs", "ss", "fs_base", "cr3", "cr4", "efer"}
    assert con.execute("regs rip $rsp").splitlines()[1].split() == ["rsp", "0x10ad88", "0x10ad88"]
    assert con.execute("info registers rax") == con.execute("regs rax")
    dump = con.execute("disas").splitlines()
    assert dump[0] == "Dump of assembler code for function buggy_store:"
    assert dump[2].startswith("=> 0x0000000000101ce2 <+2>:\tmovl   %esi,0x106040(,%rdi,8)")
    assert dump[-1] == "End of assembler dump."
    two = con.execute("disas panic 2").splitlines()
    assert len(two) == 2 and two[0].startswith("   0x101da0 <panic>:\tpushq")
    assert con.execute("disas panic").startswith("Dump of assembler code for function panic:")
    assert con.execute("info symbol 0x101ce5") == (
        "buggy_store + 5 (function, 17 bytes at 0x101ce0)"
    )


def test_info_serial_help_and_quit(con: Console, fake: FakeTarget) -> None:
    fake.pos = Position(1, 4)
    info = con.execute("info")
    assert info.splitlines()[:3] == [
        "Position: exit 1 of 4, 4 instructions since it",
        "Current exit: IO_OUT port 0x3f8 size 1 value 0x68",
        "rip 0x101ce2 <buggy_store+2>",
    ]
    assert "Replay: checkpoints: 1 (every 1000 exits)" in info
    assert "position: ..." not in info  # the engine's own position line is not repeated
    assert con.execute("serial") == "hello\nworld"
    assert con.execute("serial 1") == "world"
    fake.serial.clear()
    assert con.execute("serial") == "(no serial output up to exit 1)"
    assert "next-exit [N]" in con.execute("help")
    assert con.execute("help pe").startswith("prev-exit [N]: go back to the previous VM exit")
    assert con.execute("# a comment") == ""
    with pytest.raises(ConsoleQuit):
        con.execute("quit")


def test_status_line(con: Console, fake: FakeTarget) -> None:
    fake.pos = Position(2, 7)
    assert con.status() == (
        "exit 2/4 +7 | rip 0x101ce2 <buggy_store+2> | IO_IN port 0x3fd = 0x60 | serial: world"
    )
    fake.position = None  # type: ignore[assignment] - a broken engine must not break the toolbar
    assert con.status().startswith("position unavailable: ")


def test_completion(con: Console) -> None:
    def words(text: str) -> list[str]:
        return [w for w, _ in con.complete(text)]

    assert words("ne") == ["ne", "next-exit"]
    assert "rcontinue" in words("rc") and "rc" in words("rc")
    assert words("break buggy") == ["buggy_store"]
    assert words("b pan") == ["panic"]
    assert words("watch guard") == ["guard_value"]
    assert words("watch update") == ["updates"]  # objects first...
    assert words("watch update_") == ["update_all", "update_entry"]  # ...else any symbol
    assert "guard_value" in words("x/4gx gu")
    assert words("break *buggy_s") == ["buggy_store"]
    assert con.complete("break *buggy_s") == [("buggy_store", -7)]
    assert con.complete("x &guard") == [("guard_value", -5)]
    assert words("break panic ") == []  # one location only
    assert words("info b") == ["breakpoints"]
    assert words("info symbol buggy") == ["buggy_store"]
    assert words("help next") == ["next-exit"]
    assert words("regs r1") == ["r10", "r11", "r12", "r13", "r14", "r15"]
    assert words("monitor ch") == ["checkpoint"]
    assert words("frob x") == []
    assert set(words("")) >= {"break", "b", "watch", "quit"}


def test_the_prompt_toolkit_completer(con: Console) -> None:
    completer = ConsoleCompleter(con)
    got = list(completer.get_completions(Document("break buggy_s"), CompleteEvent()))
    assert [(c.text, c.start_position) for c in got] == [("buggy_store", -7)]
    assert "function 0x101ce0" in got[0].display_meta_text
    got = list(completer.get_completions(Document("disa"), CompleteEvent()))
    assert [c.text for c in got] == ["disas", "disassemble"]


def test_the_session_over_a_pipe(fake: FakeTarget, corrupt_elf: Path) -> None:
    sent = ["b panic", "frob", "x 0x7fff00000000", "si", "", "info position", "quit", "si"]
    status, blocks, raw = run_script(fake, str(corrupt_elf), sent)
    assert status == 0
    assert raw.startswith("rrvmm replay console: ")
    assert f" symbols from {corrupt_elf}" in raw.splitlines()[0]
    got = [(b.command, b.lines) for b in blocks]
    assert got[0] == ("b panic", ["Breakpoint 1 at 0x101da0 <panic>"])
    assert got[1] == ("frob", ['Undefined command: "frob". Try "help".'])
    assert got[2] == ("x 0x7fff00000000", ["Cannot access memory at address 0x7fff00000000"])
    assert got[3][0] == "si" and got[4][0] == ""  # the empty line repeated stepi
    assert fake.pos == Position(0, 2)
    assert got[5][1][0] == "Position: exit 0 of 4, 2 instructions since it"
    assert got[-1][0] == "quit"  # and nothing after quit ran
    assert fake.calls.count(("resume", False, True)) == 2


def test_end_of_input_quits(fake: FakeTarget) -> None:
    status, _, raw = run_script(fake, None, ["info position"])
    assert status == 0 and raw.rstrip().endswith("quit")


def test_commands_from_a_file(fake: FakeTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("b 0x101da0\nfrob\nq\nsi\n"))
    out = io.StringIO()
    assert run_console(fake, None, output=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[2:] == [
        "(rrvmm) b 0x101da0",
        "Breakpoint 1 at 0x101da0",
        "(rrvmm) frob",
        'Undefined command: "frob". Try "help".',
        "(rrvmm) q",
    ]


def test_symbol_files(fake: FakeTarget, tmp_path: Path) -> None:
    with pytest.raises(RrvmmError, match="--symbols: symbol file not found") as e:
        load_symbols(str(tmp_path / "nope.elf"), fake)
    assert e.value.status == 66
    assert load_symbols(None, fake) is None  # no recorded kernel to fall back on


def test_ctrl_c_interrupts_a_run(fake: FakeTarget) -> None:
    stopped = threading.Event()
    run = interruptible_runner()

    def long_run() -> str:
        assert stopped.wait(10), "never interrupted"
        return "interrupted"

    timer = threading.Timer(0.2, _thread.interrupt_main)  # as Ctrl-C does
    timer.start()
    try:
        assert run(long_run, stopped.set) == "interrupted"
    finally:
        timer.cancel()
    with pytest.raises(ZeroDivisionError):
        run(lambda: 1 / 0, stopped.set)


def test_ctrl_c_reaches_the_engine_or_the_stepping_loop(
    fake: FakeTarget, corrupt_symbols: SymbolTable
) -> None:
    calls: list[str] = []
    con = Console(fake, corrupt_symbols, runner=lambda fn, stop: (stop(), fn())[1])
    fake.interrupt = lambda: calls.append("engine")  # type: ignore[method-assign]
    fake.stops.append(Stop(StopKind.INTERRUPTED))
    assert con.execute("continue").splitlines()[0] == "Interrupted."
    assert calls == ["engine"]  # a run is stopped by the engine
    out = con.execute("si 1000")
    assert out.splitlines()[0] == "Interrupted."  # a stepping loop stops at its next step
    assert calls == ["engine"] and fake.pos == Position(0, 0)
    con.runner = lambda fn, stop: fn()
    con.execute("si 3")
    assert fake.pos == Position(0, 3)  # no Ctrl-C left over


def test_history_recalls_earlier_commands(fake: FakeTarget) -> None:
    live = LiveConsole(fake, None)
    try:
        live.type("b 0x101da0\r")
        live.wait_for("Breakpoint 1 at 0x101da0")
        live.type("info position\r")
        live.wait_for("Position: exit 0 of ")
        live.type("\x1b[A\x1b[A")  # up, up: the breakpoint again
        live.wait_for("b 0x101da0", count=2)
        live.type("\r")
        out = live.wait_for("Breakpoint 2 at 0x101da0 (also breakpoint 1)")
    finally:
        assert live.close() == 0
    assert out.count("Position: exit 0 of ") == 1
