"""Disassembly with capstone, in gdb's AT&T style (``mov    %esi,0x106040(,%rdi,8)``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import capstone
from capstone import x86_const

__all__ = ["Instruction", "disassemble", "format_instruction", "MAX_INSN"]

MAX_INSN = 15  # the longest x86 instruction
PAGE = 4096

_engines: dict[int, capstone.Cs] = {}


def _cs(bits: int) -> capstone.Cs:
    cs = _engines.get(bits)
    if cs is None:
        mode = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32, 16: capstone.CS_MODE_16}[bits]
        cs = capstone.Cs(capstone.CS_ARCH_X86, mode)
        cs.syntax = capstone.CS_OPT_SYNTAX_ATT
        cs.detail = True
        _engines[bits] = cs
    return cs


@dataclass(frozen=True)
class Instruction:
    address: int
    size: int
    mnemonic: str
    operands: str
    target: int | None = None  # a branch target or RIP-relative address, for annotation

    @property
    def text(self) -> str:
        if not self.operands:
            return self.mnemonic
        return f"{self.mnemonic:<6} {self.operands}"


def _decode(code: bytes, address: int, bits: int) -> Instruction | None:
    for insn in _cs(bits).disasm(code, address, 1):
        ops = insn.op_str.replace(", ", ",")
        target = None
        try:
            if insn.group(x86_const.X86_GRP_JUMP) or insn.group(x86_const.X86_GRP_CALL):
                op = insn.operands[0] if insn.operands else None
                if op is not None and op.type == x86_const.X86_OP_IMM:
                    target = op.imm
            else:
                for op in insn.operands:
                    if op.type == x86_const.X86_OP_MEM and op.mem.base == x86_const.X86_REG_RIP:
                        target = (insn.address + insn.size + op.mem.disp) & (2**64 - 1)
        except capstone.CsError:  # no detail for this instruction
            pass
        return Instruction(insn.address, insn.size, insn.mnemonic, ops, target)
    return None


def read_code(read: Callable[[int, int], bytes], address: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``address``; stops short at the first unreadable page.

    Raises what ``read`` raises if not even the first byte can be read.
    """
    try:
        return read(address, length)
    except Exception:  # noqa: BLE001 - retry up to the page end, then page by page
        pass
    out = b""
    while len(out) < length:
        here = address + len(out)
        n = min(length - len(out), PAGE - here % PAGE)
        try:
            out += read(here, n)
        except Exception:
            if not out:
                raise
            break
    return out


def disassemble(
    read: Callable[[int, int], bytes],
    address: int,
    count: int,
    *,
    end: int | None = None,
    bits: int = 64,
) -> list[Instruction]:
    """``count`` instructions from ``address`` (or up to ``end``), decoding undecodable
    bytes as ``(bad)`` one at a time. ``read(address, length)`` reads guest memory."""
    want = (end - address) if end is not None else count * MAX_INSN
    code = read_code(read, address, max(want, 1) + MAX_INSN)
    out: list[Instruction] = []
    off = 0
    while len(out) < count and off < len(code):
        if end is not None and address + off >= end:
            break
        chunk = code[off : off + MAX_INSN]
        insn = _decode(chunk, address + off, bits)
        if insn is None:
            if len(chunk) < MAX_INSN and off:
                padded = _decode(chunk + bytes(MAX_INSN - len(chunk)), address + off, bits)
                if padded is not None and padded.size > len(chunk):
                    break  # an instruction cut by the end of readable memory
            insn = Instruction(address + off, 1, "(bad)", "")
        out.append(insn)
        off += insn.size
    return out


def format_instruction(
    insn: Instruction,
    *,
    describe: Callable[[int], str] = lambda _a: "",
    current: bool = False,
    label: str | None = None,
    wide: bool = False,
) -> str:
    """One line as gdb's ``x/i`` prints it: ``=> 0x101ce2 <buggy_store+2>:\\tmov ...``.

    ``label`` replaces the ``<sym+off>`` part (``disas FUNC`` prints ``<+2>``); ``wide``
    prints 16 hex digits as gdb's disassemble command does.
    """
    marker = "=> " if current else "   "
    addr = f"{insn.address:#018x}" if wide else f"{insn.address:#x}"
    if label is None:
        sym = describe(insn.address)
        label = f"<{sym}>" if sym else ""
    head = f"{marker}{addr} {label}:" if label else f"{marker}{addr}:"
    text = insn.text
    if insn.target is not None:
        sym = describe(insn.target)
        if insn.operands.startswith("0x") and "(" not in insn.operands:
            text += f" <{sym}>" if sym else ""
        else:
            text += f"  # {insn.target:#x}" + (f" <{sym}>" if sym else "")
    return f"{head}\t{text}"
