"""The replay console over a real replay of the `corrupt` guest (KVM).

The console is driven as a user would drive it: commands typed into prompt_toolkit's pipe
input, output read back as text.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from console_driver import Block, LiveConsole, run_script

from rrvmm.console.commands import Console, describe_exit
from rrvmm.console.disasm import disassemble
from rrvmm.console.symbols import SymbolTable
from rrvmm.target import Position, ReplayTarget

pytestmark = pytest.mark.kvm

GUARD_MAGIC = 0x600DF00D


def _by_command(blocks: list[Block], sent: list[str]) -> list[Block]:
    typed = [b for b in blocks if b.command]
    assert [b.command for b in typed] == [s for s in sent if s], [b.command for b in typed]
    return typed


def _store_address(elf: Path, symbols: SymbolTable) -> int:
    """The address of buggy_store's `mov %esi,0x106040(,%rdi,8)`, from the ELF itself."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        base, code = text["sh_addr"], text.data()
    func = symbols.lookup("buggy_store")
    assert func is not None

    def read(addr: int, n: int) -> bytes:
        return code[addr - base : addr - base + n]

    insns = disassemble(read, func.address, 10, end=func.address + func.size)
    stores = [i for i in insns if i.mnemonic.startswith("mov") and "0x106040(" in i.operands]
    assert len(stores) == 1, insns
    assert stores[0].operands == "%esi,0x106040(,%rdi,8)"
    return stores[0].address


def test_the_corruption_hunt(engine, corrupt_elf: Path, corrupt_symbols: SymbolTable) -> None:
    sent = [
        "break panic",
        "continue",
        "x/1wx &guard_value",
        "watch guard_value",
        "rcontinue",
        "x/1wx &guard_value",
        "info breakpoints",
        "serial",
    ]
    status, blocks, raw = run_script(engine, str(corrupt_elf), sent)
    assert status == 0
    brk, cont, x1, watch, rc, x2, info, serial = _by_command(blocks, sent)
    panic = corrupt_symbols.lookup("panic").address  # type: ignore[union-attr]
    guard = corrupt_symbols.lookup("guard_value").address  # type: ignore[union-attr]
    assert brk.lines == [f"Breakpoint 1 at {panic:#x} <panic>"]
    assert cont.lines[0].startswith(f"Breakpoint 1, {panic:#018x} in panic () [exit ")
    assert cont.lines[1].startswith(f"=> {panic:#x} <panic>:")
    assert x1.lines == [f"{guard:#x} <guard_value>:\t0x0000006c"]  # corrupted: 108
    assert watch.lines == [f"Hardware watchpoint 2: guard_value (4 bytes at {guard:#x})"]
    # back to the store that wrote it: stopped at the instruction, before the write
    store = _store_address(corrupt_elf, corrupt_symbols)
    assert rc.lines[0] == f"Watchpoint 2: guard_value 0x6c -> {GUARD_MAGIC:#x}"
    assert rc.lines[1].startswith(f"{store:#018x} in buggy_store () [exit ")
    off = store - corrupt_symbols.lookup("buggy_store").address  # type: ignore[union-attr]
    assert rc.lines[2] == f"=> {store:#x} <buggy_store+{off}>:\tmovl   %esi,0x106040(,%rdi,8)"
    assert engine.read_registers()["rip"] == store
    assert engine.read_registers()["rdi"] == 8  # idx == TABLE_SIZE: one past the table
    assert x2.lines == [f"{guard:#x} <guard_value>:\t{GUARD_MAGIC:#010x}"]
    assert "breakpoint already hit 1 time" in info.text
    assert "hw watchpoint already hit 1 time" in info.text
    # the serial output of the replay so far: the second check_table has not run yet
    assert serial.lines[-1] == "corrupt: updating 8 entries"
    assert "PANIC" not in serial.text


def test_the_engine_is_the_replay_target_the_console_drives(engine) -> None:
    assert isinstance(engine, ReplayTarget)
    assert [e.index for e in engine.recorded_exits(1, 3)] == [1, 2, 3]
    last = engine.recorded_exits(engine.total_exits - 1, 10)
    assert [e.index for e in last] == [engine.total_exits - 1, engine.total_exits]
    assert engine.serial_output() == b"" and engine.end_reason is None
    engine.goto_exit(engine.total_exits)
    assert engine.end_reason is not None  # the guest's own end: isa-debug-exit
    out = engine.serial_output()
    assert hashlib.sha256(out).hexdigest() == engine.reader.footer["serial_sha256"]
    assert engine.serial_output(12) == out[-12:]
    assert engine.code_bits() in (32, 64)


def _regs_and_memory(c: Console) -> tuple[str, str, dict[str, int]]:
    return c.execute("regs"), c.execute("x/64gx 0x106000"), c.target.read_registers()


def test_back_across_an_exit_and_forward_restores_registers(engine, corrupt_elf: Path) -> None:
    k, total = engine.total_exits // 2, engine.total_exits
    row = engine.recorded_exits(k, 1)[0]
    sent = [f"goto {k}", "regs", "rsi", "regs", "si", "regs", "pe", "regs", "ne", "regs"]
    _, blocks, _ = run_script(engine, str(corrupt_elf), sent)
    goto, at, rsi, before, si, again, pe, prev, ne, back = _by_command(blocks, sent)
    assert goto.lines[0] == f"exit {k} of {total}: {describe_exit(row)}"
    assert f"[exit {k}: " in rsi.text  # stepped back over the exit into the interval before
    assert before.text != at.text
    assert f"[exit {k}: " in si.text
    assert again.text == at.text  # forward again: identical registers
    assert pe.lines[0].startswith(f"exit {k - 1} of ")
    assert prev.text != at.text
    assert ne.lines[0].startswith(f"exit {k} of ")
    assert back.text == at.text
    assert len(at.lines) == 33 and at.lines[16].startswith("rip")


def test_back_and_forth_from_inside_an_interval(engine, corrupt_symbols: SymbolTable) -> None:
    c = Console(engine, corrupt_symbols)
    # after a byte written to the UART the guest formats the next one: a long interval
    k = next(
        e.index for e in engine.recorded_exits(engine.total_exits // 2, 100) if e.kind == "IO_OUT"
    )
    assert c.execute(f"goto {k}").startswith(f"exit {k} of ")
    c.execute("si 7")
    assert engine.position() == Position(k, 7)
    first = _regs_and_memory(c)
    assert c.execute("pe").startswith(f"exit {k} of ")  # the exit this interval began with
    assert c.execute("pe").startswith(f"exit {k - 1} of ")
    c.execute("rsi 3")  # into the interval before exit k-1
    assert engine.position().exit_index == k - 2
    c.execute("ne")
    c.execute("ne")
    assert engine.position() == Position(k, 0)
    c.execute("si 7")
    assert _regs_and_memory(c) == first
    c.execute("goto 1")
    c.execute(f"goto {k} 7")
    assert _regs_and_memory(c) == first


def test_errors_are_one_line_and_the_session_goes_on(engine, corrupt_elf: Path) -> None:
    sent = [
        "goto 201",  # in long mode, with paging (at exit 0 a linear address has 32 bits)
        "frobnicate",
        "x 0x7fff00000000",
        "break no_such_function",
        "x 0xzz",
        "goto 100000",
        "si -1",
        "watch 0x7fff00000000",
        "delete 9",
        "disas 0x7fff00000000",
        "info nonsense",
        "regs rfoo",
        "x/8s guard_value",
        "monitor frob",
        "break panic",
        "c",
    ]
    status, blocks, _ = run_script(engine, str(corrupt_elf), sent)
    assert status == 0
    typed = _by_command(blocks, sent)[1:]
    for b in typed[:-2]:
        assert len(b.lines) == 1, (b.command, b.lines)
    errs = {b.command: b.lines[0] for b in typed}
    assert errs["frobnicate"] == 'Undefined command: "frobnicate". Try "help".'
    assert errs["x 0x7fff00000000"] == "Cannot access memory at address 0x7fff00000000"
    assert errs["break no_such_function"] == 'No symbol "no_such_function" in current context.'
    assert errs["x 0xzz"] == 'Invalid number "0xzz".'
    assert f"{engine.total_exits} exits" in errs["goto 100000"]
    assert errs["delete 9"] == "No breakpoint number 9."
    assert errs["watch 0x7fff00000000"].startswith("Cannot access memory")
    # and it goes on: the next commands work
    assert typed[-2].lines[0].startswith("Breakpoint 1 at ")
    assert typed[-1].lines[0].startswith("Breakpoint 1, ")


def test_start_and_end_of_the_recording(engine, corrupt_elf: Path) -> None:
    sent = ["rc", "pe", "rsi", "c", "ne", "si", "serial 2", "exits 1 5", "info"]
    _, blocks, _ = run_script(engine, str(corrupt_elf), sent)
    rc, pe, rsi, c, ne, si, serial, exits, info = _by_command(blocks, sent)
    start = "No more reverse-execution history (start of the recording)."
    end = "No more reverse-execution history (end of the recording)."
    assert rc.lines[0] == start and "in _start32 () [exit 0 +0]" in rc.lines[1]
    assert pe.lines[0] == start
    assert rsi.lines[0] == start
    assert c.lines[0] == end
    assert c.lines[1] == "The guest ended: guest wrote 0x3 to isa-debug-exit"
    assert f"in rt_exit () [exit {engine.total_exits} +0]" in c.lines[2]
    assert ne.lines[0] == end
    assert si.lines[0] == end
    assert serial.lines == [
        "check_table: sum=25808 guard_value=0x0000006c",
        "PANIC: guard corrupted",
    ]
    assert exits.lines[0].split()[:3] == ["exit", "kind", "port/addr"]
    assert len(exits.lines) == 6 and "IO_OUT" in exits.text
    assert re.search(r"^\s+1\s+\w+", exits.lines[1])
    total = engine.total_exits
    assert f"Position: exit {total} of {total}" in info.text
    assert "Replay: checkpoints:" in info.text
    assert "The guest ended: guest wrote 0x3 to isa-debug-exit" in info.text


def test_the_toolbar(engine, corrupt_symbols: SymbolTable) -> None:
    c = Console(engine, corrupt_symbols)
    total = engine.total_exits
    assert c.status() == (
        f"exit 0/{total} +0 | rip 0x10000c <_start32> | start of the recording | serial: -"
    )
    # the newline the guest wrote after "corrupt: updating 8 entries"
    k = _serial_exit(engine, b"corrupt: updating 8 entries\n")
    c.execute(f"goto {k}")
    status = c.status()
    assert status.startswith(f"exit {k}/{total} +0 | rip ")
    assert "<serial_putc+" in status
    assert "| IO_OUT port 0x3f8 = 0xa |" in status
    assert status.endswith("| serial: corrupt: updating 8 entries")
    c.execute("si 3")
    assert c.status().startswith(f"exit {k}/{total} +3 | ")
    c.execute(f"goto {total}")
    assert "| guest ended |" in c.status()


def _serial_exit(engine, text: bytes) -> int:  # noqa: ANN001
    """The exit at which the guest's serial output first ends with ``text``."""
    out = b""
    for e in engine.recorded_exits(1, engine.total_exits):
        if e.kind == "IO_OUT" and e.addr == 0x3F8:
            assert isinstance(e.value, int)
            out += bytes([e.value & 0xFF])
            if out.endswith(text):
                return e.index
    raise AssertionError(f"{text!r} not in the serial output: {out!r}")


def test_tab_completes_symbols_in_the_session(engine, corrupt_elf: Path) -> None:
    live = LiveConsole(engine, str(corrupt_elf))
    try:
        live.wait_for("(rrvmm)")
        live.type("break buggy_st\t")
        live.wait_for("break buggy_store")
        live.type("\r")
        live.wait_for("Breakpoint 1 at ")
        live.type("c\r")
        live.wait_for("Breakpoint 1, 0x0000000000101ce0 in buggy_store () [exit ")
        live.type("watch guard_v\t")
        live.wait_for("watch guard_value")
        live.type("\r")
        out = live.wait_for("Hardware watchpoint 2: guard_value (4 bytes at 0x106080)")
    finally:
        assert live.close() == 0
    assert "Breakpoint 1 at 0x101ce0 <buggy_store>" in out


def test_stepi_at_the_watchpoint_stop_moves_one_instruction(
    engine, corrupt_symbols: SymbolTable
) -> None:
    c = Console(engine, corrupt_symbols)
    for cmd in ("break panic", "continue", "watch guard_value", "rcontinue"):
        c.execute(cmd)
    store = engine.read_registers()["rip"]
    following = c._insns(store, 2)[1].address
    c.execute("stepi")
    assert engine.read_registers()["rip"] == following


def test_symbols_default_to_the_recorded_kernel(engine) -> None:
    _, blocks, raw = run_script(engine, None, ["break panic"])
    kernel = engine.recorded_kernel().path
    assert f"symbols from {kernel}" in raw.splitlines()[0]  # corrupt.mb: an ELF32 with symbols
    assert blocks[0].lines == ["Breakpoint 1 at 0x101da0 <panic>"]
