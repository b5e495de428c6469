"""The x86-64 register file as gdb sees it over the wire, and its target description.

Remote register numbers follow QEMU's x86-64 stub (66 registers), which puts the
Target's own registers first, in :data:`~rrvmm.target.REGISTER_NAMES` order:

====== ==========================================================
0-15   rax rbx rcx rdx rsi rdi rbp rsp r8..r15 (64-bit)
16     rip (so ``10:`` in a stop reply is the pc)
17     eflags (32-bit)
18-23  cs ss ds es fs gs selectors (32-bit)
24-26  fs_base gs_base k_gs_base (64-bit)
27-32  cr0 cr2 cr3 cr4 cr8 efer (64-bit)
33-40  st0..st7 (80-bit), 41-48 fctrl fstat ftag fiseg fioff foseg fooff fop (32-bit)
49-64  xmm0..xmm15 (128-bit), 65 mxcsr (32-bit)
====== ==========================================================

gdb's i386:x86-64 architecture validates the description by feature and name: the
``org.gnu.gdb.i386.core`` feature must hold rax..gs *and* st0..fop, and the
``org.gnu.gdb.i386.sse`` feature xmm0..xmm15 and mxcsr. The ``org.gnu.gdb.i386.segments``
feature (fs_base, gs_base) is optional but lets gdb know what those are. Because the core
feature's registers are not contiguous in this numbering, every ``<reg>`` carries an
explicit ``regnum``; gdb lays out ``g`` packets by those numbers, not by document order.

Registers the Target does not report (x87, SSE) read as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rrvmm.target import REGISTER_NAMES

__all__ = [
    "Register",
    "REGISTERS",
    "REGISTER_INDEX",
    "PC_REGNUM",
    "ARCHITECTURE",
    "XML_FILES",
    "target_xml",
    "encode_register",
    "decode_register",
    "encode_registers",
    "decode_registers",
]

ARCHITECTURE = "i386:x86-64"

CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SEGMENTS = "org.gnu.gdb.i386.segments"
SYS = "org.gnu.gdb.i386.sys"


@dataclass(frozen=True)
class Register:
    name: str
    bitsize: int
    type: str
    feature: str
    group: str | None = None

    @property
    def size(self) -> int:
        """Bytes on the wire."""
        return self.bitsize // 8


def _build() -> tuple[Register, ...]:
    regs: list[Register] = []
    gprs = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15".split()
    for name in gprs:
        kind = "data_ptr" if name in ("rbp", "rsp") else "int64"
        regs.append(Register(name, 64, kind, CORE))
    regs.append(Register("rip", 64, "code_ptr", CORE))
    regs.append(Register("eflags", 32, "i386_eflags", CORE))
    for name in "cs ss ds es fs gs".split():
        regs.append(Register(name, 32, "int32", CORE))
    for name in "fs_base gs_base k_gs_base".split():
        regs.append(Register(name, 64, "int64", SEGMENTS, "system"))
    for name, kind in (
        ("cr0", "i386_cr0"),
        ("cr2", "int64"),
        ("cr3", "int64"),
        ("cr4", "i386_cr4"),
        ("cr8", "int64"),
        ("efer", "i386_efer"),
    ):
        regs.append(Register(name, 64, kind, SYS, "system"))
    for i in range(8):
        regs.append(Register(f"st{i}", 80, "i387_ext", CORE, "float"))
    for name in "fctrl fstat ftag fiseg fioff foseg fooff fop".split():
        regs.append(Register(name, 32, "int", CORE, "float"))
    for i in range(16):
        regs.append(Register(f"xmm{i}", 128, "vec128", SSE, "vector"))
    regs.append(Register("mxcsr", 32, "i386_mxcsr", SSE, "vector"))
    return tuple(regs)


REGISTERS: tuple[Register, ...] = _build()
REGISTER_INDEX: dict[str, int] = {r.name: i for i, r in enumerate(REGISTERS)}
PC_REGNUM = REGISTER_INDEX["rip"]

if tuple(r.name for r in REGISTERS[: len(REGISTER_NAMES)]) != tuple(REGISTER_NAMES):
    raise ImportError("regs.REGISTERS no longer starts with target.REGISTER_NAMES")


# --- wire encoding -------------------------------------------------------------------------


def encode_register(index: int, value: int) -> bytes:
    """Register ``index`` holding ``value`` as little-endian hex of its XML bitsize."""
    reg = REGISTERS[index]
    value &= (1 << reg.bitsize) - 1
    return value.to_bytes(reg.size, "little").hex().encode("ascii")


def decode_register(index: int, text: bytes) -> int:
    """Little-endian hex of exactly the register's size; ValueError otherwise."""
    reg = REGISTERS[index]
    if len(text) != reg.size * 2:
        raise ValueError(f"{reg.name} needs {reg.size * 2} hex digits, got {len(text)}")
    return int.from_bytes(bytes.fromhex(text.decode("ascii")), "little")


def encode_registers(values: Mapping[str, int]) -> bytes:
    """The ``g`` reply: every register in number order, missing ones as zeros."""
    return b"".join(encode_register(i, values.get(r.name, 0)) for i, r in enumerate(REGISTERS))


def decode_registers(text: bytes) -> dict[str, int]:
    """A ``G`` payload back into name -> value; ValueError unless it is exactly complete."""
    total = sum(r.size for r in REGISTERS) * 2
    if len(text) != total:
        raise ValueError(f"G needs {total} hex digits, got {len(text)}")
    out: dict[str, int] = {}
    pos = 0
    for i, reg in enumerate(REGISTERS):
        n = reg.size * 2
        out[reg.name] = decode_register(i, text[pos : pos + n])
        pos += n
    return out


# --- target description --------------------------------------------------------------------

# Bit fields for the flag types, (name, bit). Names follow the Intel SDM.
_EFLAGS = (
    ("CF", 0), ("", 1), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
    ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19),
    ("VIP", 20), ("ID", 21),
)  # fmt: skip
_MXCSR = (
    ("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6), ("IM", 7),
    ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15),
)  # fmt: skip
_CR0 = (
    ("PE", 0), ("MP", 1), ("EM", 2), ("TS", 3), ("ET", 4), ("NE", 5), ("WP", 16), ("AM", 18),
    ("NW", 29), ("CD", 30), ("PG", 31),
)  # fmt: skip
_CR4 = (
    ("VME", 0), ("PVI", 1), ("TSD", 2), ("DE", 3), ("PSE", 4), ("PAE", 5), ("MCE", 6),
    ("PGE", 7), ("PCE", 8), ("OSFXSR", 9), ("OSXMMEXCPT", 10), ("UMIP", 11), ("LA57", 12),
    ("VMXE", 13), ("SMXE", 14), ("FSGSBASE", 16), ("PCIDE", 17), ("OSXSAVE", 18),
    ("SMEP", 20), ("SMAP", 21), ("PKE", 22),
)  # fmt: skip
_EFER = (("SCE", 0), ("LME", 8), ("LMA", 10), ("NXE", 11), ("SVME", 12), ("FFXSR", 14))


def _flags(type_id: str, size: int, fields: tuple[tuple[str, int], ...]) -> list[str]:
    lines = [f'  <flags id="{type_id}" size="{size}">']
    lines += [f'    <field name="{n}" start="{b}" end="{b}"/>' for n, b in fields]
    lines.append("  </flags>")
    return lines


def _vec128() -> list[str]:
    lines = []
    vectors = (
        ("v4f", "ieee_single", 4),
        ("v2d", "ieee_double", 2),
        ("v16i8", "int8", 16),
        ("v8i16", "int16", 8),
        ("v4i32", "int32", 4),
        ("v2i64", "int64", 2),
    )
    for vid, elem, count in vectors:
        lines.append(f'  <vector id="{vid}" type="{elem}" count="{count}"/>')
    lines.append('  <union id="vec128">')
    for field, vid in (
        ("v4_float", "v4f"),
        ("v2_double", "v2d"),
        ("v16_int8", "v16i8"),
        ("v8_int16", "v8i16"),
        ("v4_int32", "v4i32"),
        ("v2_int64", "v2i64"),
        ("uint128", "uint128"),
    ):
        lines.append(f'    <field name="{field}" type="{vid}"/>')
    lines.append("  </union>")
    return lines


_TYPES: dict[str, list[str]] = {
    CORE: _flags("i386_eflags", 4, _EFLAGS),
    SSE: _vec128() + _flags("i386_mxcsr", 4, _MXCSR),
    SEGMENTS: [],
    SYS: _flags("i386_cr0", 8, _CR0) + _flags("i386_cr4", 8, _CR4) + _flags("i386_efer", 8, _EFER),
}


def target_xml() -> str:
    """The whole description in one document (no ``xi:include``), features in gdb's order."""
    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
        '<target version="1.0">',
        f"<architecture>{ARCHITECTURE}</architecture>",
    ]
    for feature in (CORE, SSE, SEGMENTS, SYS):
        lines.append(f'<feature name="{feature}">')
        lines += _TYPES[feature]
        for i, reg in enumerate(REGISTERS):
            if reg.feature != feature:
                continue
            group = f' group="{reg.group}"' if reg.group else ""
            lines.append(
                f'  <reg name="{reg.name}" bitsize="{reg.bitsize}" type="{reg.type}"'
                f' regnum="{i}"{group}/>'
            )
        lines.append("</feature>")
    lines.append("</target>")
    return "\n".join(lines) + "\n"


# Annex name -> document, for qXfer:features:read.
XML_FILES: dict[str, bytes] = {"target.xml": target_xml().encode("ascii")}
