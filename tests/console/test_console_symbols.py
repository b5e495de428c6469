"""ELF symbols (pyelftools) and disassembly (capstone) for the console; no KVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrvmm.console.disasm import Instruction, disassemble, format_instruction, read_code
from rrvmm.console.symbols import FUNCTION, OBJECT, SymbolError, SymbolTable


def test_symbols_of_the_corrupt_guest(corrupt_symbols: SymbolTable) -> None:
    s = corrupt_symbols
    for name in ("init_table", "update_entry", "buggy_store", "check_table", "panic"):
        sym = s.lookup(name)
        assert sym is not None and sym.kind == FUNCTION and sym.size > 0, name
    guard, table = s.lookup("guard_value"), s.lookup("table")
    assert guard is not None and guard.kind == OBJECT and guard.size == 4
    assert table is not None and table.size == 64
    assert guard.address == table.address + table.size  # the layout the bug relies on
    store = s.lookup("buggy_store")
    assert store is not None
    assert s.describe(store.address) == "buggy_store"
    assert s.describe(store.address + 2) == "buggy_store+2"
    assert s.find(store.address + 2) == (store, 2)
    assert s.describe(guard.address) == "guard_value"
    assert s.describe(table.address + 8 * 8) == "guard_value"  # table[8] is guard_value
    assert s.describe(table.address + 12) == "table+12"
    assert s.function_at(store.address + 5) == store
    assert s.function_at(guard.address) is None
    assert s.describe(0x10) == ""  # below the image: no symbol
    # labels without a size (assembly) still name the code after them
    isr = s.lookup("isr_0")
    assert isr is not None and s.describe(isr.address + 3) == "isr_0+3"
    assert s.lookup("no_such_symbol") is None


def test_symbol_names_for_completion(corrupt_symbols: SymbolTable) -> None:
    assert corrupt_symbols.names("buggy") == ["buggy_store"]
    assert "panic" in corrupt_symbols.names("pa")
    assert corrupt_symbols.names("guard", (FUNCTION,)) == []
    assert corrupt_symbols.names("guard", (OBJECT,)) == ["guard_value"]
    assert len(corrupt_symbols.names()) == len(corrupt_symbols) > 50


def test_the_multiboot_image_has_the_same_symbols(guest_dir: Path) -> None:
    elf32 = SymbolTable.from_elf(guest_dir / "corrupt.mb")  # ELF32: pyelftools reads it too
    elf64 = SymbolTable.from_elf(guest_dir / "corrupt.elf")
    for name in ("panic", "buggy_store", "guard_value"):
        assert elf32.lookup(name).address == elf64.lookup(name).address  # type: ignore[union-attr]


def test_bad_symbol_files(tmp_path: Path) -> None:
    with pytest.raises(SymbolError, match="not found"):
        SymbolTable.from_elf(tmp_path / "nope.elf")
    junk = tmp_path / "junk.elf"
    junk.write_bytes(b"this is not an ELF file at all")
    with pytest.raises(SymbolError, match="not an ELF"):
        SymbolTable.from_elf(junk)
    with pytest.raises(SymbolError, match="directory"):
        SymbolTable.from_elf(tmp_path)


def _text_reader(elf: Path):  # noqa: ANN202
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".text")
        base, code = sec["sh_addr"], sec.data()

    def read(addr: int, n: int) -> bytes:
        if not base <= addr < base + len(code):
            raise ValueError(f"unmapped {addr:#x}")
        return code[addr - base : addr - base + n]

    return read, base, len(code)


def test_disassembly_of_buggy_store(corrupt_elf: Path, corrupt_symbols: SymbolTable) -> None:
    read, _, _ = _text_reader(corrupt_elf)
    store = corrupt_symbols.lookup("buggy_store")
    assert store is not None
    insns = disassemble(read, store.address, 100, end=store.address + store.size)
    assert [i.address for i in insns][:2] == [store.address, store.address + 2]
    assert insns[1].mnemonic == "movl" and insns[1].operands == "%esi,0x106040(,%rdi,8)"
    assert insns[-1].mnemonic.startswith("ret")
    line = format_instruction(insns[1], describe=corrupt_symbols.describe, current=True)
    assert line == f"=> {store.address + 2:#x} <buggy_store+2>:\tmovl   %esi,0x106040(,%rdi,8)"
    wide = format_instruction(insns[0], wide=True, label="<+0>")
    assert wide == f"   {store.address:#018x} <+0>:\tmovl   %edi,%edi"


def test_branch_and_rip_relative_targets_are_named(
    corrupt_elf: Path, corrupt_symbols: SymbolTable
) -> None:
    read, _, _ = _text_reader(corrupt_elf)
    upd = corrupt_symbols.lookup("update_entry")
    assert upd is not None
    lines = [
        format_instruction(i, describe=corrupt_symbols.describe)
        for i in disassemble(read, upd.address, 10, end=upd.address + upd.size)
    ]
    assert any("# 0x" in ln and "<updates>" in ln for ln in lines), lines  # updates++
    assert any(ln.endswith("<buggy_store>") for ln in lines), lines  # the tail call


def test_undecodable_bytes_and_the_end_of_memory() -> None:
    mem = {0x1000: bytes([0x90, 0x06, 0x90])}  # nop; (bad) in 64-bit mode; nop

    def read(addr: int, n: int) -> bytes:
        if not 0x1000 <= addr < 0x1003:
            raise ValueError("unmapped")
        return mem[0x1000][addr - 0x1000 : addr - 0x1000 + n][: 0x1003 - addr]

    insns = disassemble(lambda a, n: read(a, min(n, 0x1003 - a)), 0x1000, 10)
    assert [(i.address, i.mnemonic) for i in insns] == [
        (0x1000, "nop"),
        (0x1001, "(bad)"),
        (0x1002, "nop"),
    ]
    assert read_code(lambda a, n: bytes(n) if a < 0x2000 else b"", 0x1FF0, 4) == bytes(4)
    with pytest.raises(ValueError):
        disassemble(read, 0x5000, 1)
    assert Instruction(0, 1, "ret", "").text == "ret"
