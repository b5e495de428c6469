"""A tiny AML encoder: just the terms our DSDT needs, written by hand from ACPI 6.x chapter 20.

Every function returns the encoded bytes of one term, so a table body is plain concatenation
(``scope("\\\\_SB", device("VR00", name("_HID", string("LNRO0005")), ...))``). Keeping it to
bytes-in, bytes-out means tests can check each encoding against the spec's grammar directly,
and there is no object model to drift away from what the interpreter actually parses.
"""

from __future__ import annotations

import re

__all__ = [
    "ZERO_OP",
    "ONE_OP",
    "ONES_OP",
    "buffer",
    "device",
    "eisa_id",
    "end_tag",
    "extended_interrupt",
    "integer",
    "memory32_fixed",
    "method",
    "name",
    "name_string",
    "package",
    "pkg_length",
    "pkg_framed",
    "resource_template",
    "scope",
    "string",
]

# Opcodes (ACPI 6.x, 20.3 "AML Byte Stream Byte Values").
ZERO_OP = 0x00
ONE_OP = 0x01
ONES_OP = 0xFF
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
NAME_OP = 0x08
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
METHOD_OP = 0x14
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
ROOT_CHAR = 0x5C
PARENT_PREFIX_CHAR = 0x5E

# Resource descriptor tags (ACPI 6.x, 6.4 "Resource Data Types for ACPI").
MEMORY32_FIXED_TAG = 0x86
EXTENDED_INTERRUPT_TAG = 0x89
END_TAG = 0x79

# PkgLength: the largest value each encoding size can hold (the value counts its own bytes).
PKG_LENGTH_LIMITS = (0x3F, 0xFFF, 0xFFFFF, 0xFFFFFFF)

_NAME_SEG = re.compile(r"[A-Z_][A-Z0-9_]{0,3}")


def pkg_length(value: int) -> bytes:
    """Encode a PkgLength whose ``value`` already includes the PkgLength bytes themselves.

    One byte holds 0-63 in bits 0-5; otherwise bits 6-7 of the lead byte count the bytes that
    follow, the lead byte keeps the low nibble and each following byte the next 8 bits.
    """
    if value < 0:
        raise ValueError(f"negative PkgLength {value}")
    if value <= PKG_LENGTH_LIMITS[0]:
        return bytes([value])
    for extra, limit in enumerate(PKG_LENGTH_LIMITS[1:], start=1):
        if value <= limit:
            rest = value >> 4
            return bytes([(extra << 6) | (value & 0x0F)]) + rest.to_bytes(extra, "little")
    raise ValueError(f"PkgLength {value:#x} exceeds 28 bits")


def pkg_framed(payload: bytes) -> bytes:
    """``payload`` preceded by the shortest PkgLength that covers itself plus ``payload``."""
    for size in range(1, 5):
        total = len(payload) + size
        if total <= PKG_LENGTH_LIMITS[size - 1]:
            return pkg_length(total) + payload
    raise ValueError(f"AML package of {len(payload)} bytes is too long")


def _name_seg(seg: str) -> bytes:
    if not _NAME_SEG.fullmatch(seg):
        raise ValueError(f"bad AML NameSeg {seg!r}")
    return seg.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """Encode an ASL name path such as ``_HID``, ``\\\\_SB.VR00`` or ``^PCI0``."""
    prefix = b""
    rest = path
    if rest.startswith("\\"):
        prefix, rest = bytes([ROOT_CHAR]), rest[1:]
    else:
        while rest.startswith("^"):
            prefix += bytes([PARENT_PREFIX_CHAR])
            rest = rest[1:]
    segs = [_name_seg(s) for s in rest.split(".")] if rest else []
    if not segs:
        return prefix + b"\x00"  # NullName
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + segs[0] + segs[1]
    if len(segs) > 255:
        raise ValueError(f"name path {path!r} has too many segments")
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def integer(value: int) -> bytes:
    """The shortest ComputationalData encoding of an unsigned integer (Zero/One/Byte..QWord)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"AML integer {value} out of range")
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, size in (
        (BYTE_PREFIX, 1),
        (WORD_PREFIX, 2),
        (DWORD_PREFIX, 4),
        (QWORD_PREFIX, 8),
    ):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise AssertionError("unreachable")


def string(text: str) -> bytes:
    """A String constant: ASCII 0x01-0x7F, NUL-terminated."""
    raw = text.encode("ascii")
    if b"\x00" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + raw + b"\x00"


def eisa_id(text: str) -> bytes:
    """ASL ``EISAID("PNP0C0C")``: three letters + four hex digits packed into a DWord."""
    if not re.fullmatch(r"[A-Z]{3}[0-9A-F]{4}", text):
        raise ValueError(f"bad EISA id {text!r}")
    letters = [ord(c) - 0x40 for c in text[:3]]
    product = int(text[3:], 16)
    head = (letters[0] << 10) | (letters[1] << 5) | letters[2]
    # The compressed id is stored big-endian inside a little-endian DWord.
    return bytes([DWORD_PREFIX]) + head.to_bytes(2, "big") + product.to_bytes(2, "big")


def name(path: str, value: bytes) -> bytes:
    """``Name(path, value)``; ``value`` is an already-encoded data object."""
    return bytes([NAME_OP]) + name_string(path) + value


def scope(path: str, *terms: bytes) -> bytes:
    """``Scope(path) { terms }``."""
    return bytes([SCOPE_OP]) + pkg_framed(name_string(path) + b"".join(terms))


def device(path: str, *terms: bytes) -> bytes:
    """``Device(path) { terms }``."""
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_framed(name_string(path) + b"".join(terms))


def method(path: str, arg_count: int, *terms: bytes, serialized: bool = False) -> bytes:
    """``Method(path, arg_count, NotSerialized|Serialized) { terms }`` (sync level 0)."""
    if not 0 <= arg_count <= 7:
        raise ValueError(f"a method takes 0-7 arguments, not {arg_count}")
    flags = arg_count | (0x08 if serialized else 0)
    return bytes([METHOD_OP]) + pkg_framed(name_string(path) + bytes([flags]) + b"".join(terms))


def package(*elements: bytes) -> bytes:
    """``Package() { elements }`` with NumElements equal to the elements given."""
    if len(elements) > 255:
        raise ValueError("a Package holds at most 255 elements (VarPackage not supported)")
    return bytes([PACKAGE_OP]) + pkg_framed(bytes([len(elements)]) + b"".join(elements))


def buffer(data: bytes) -> bytes:
    """``Buffer() { data }`` with BufferSize equal to ``len(data)``."""
    return bytes([BUFFER_OP]) + pkg_framed(integer(len(data)) + data)


def memory32_fixed(base: int, size: int, writeable: bool = True) -> bytes:
    """``Memory32Fixed(ReadWrite|ReadOnly, base, size)``: large descriptor 0x86, 12 bytes."""
    if not (0 <= base < 1 << 32 and 0 <= size < 1 << 32 and base + size <= 1 << 32):
        raise ValueError(f"Memory32Fixed {base:#x}+{size:#x} does not fit in 32 bits")
    body = bytes([1 if writeable else 0]) + base.to_bytes(4, "little") + size.to_bytes(4, "little")
    return bytes([MEMORY32_FIXED_TAG]) + len(body).to_bytes(2, "little") + body


def extended_interrupt(
    *irqs: int,
    consumer: bool = True,
    level: bool = True,
    active_low: bool = False,
    shared: bool = False,
) -> bytes:
    """``Interrupt(ResourceConsumer, Level, ActiveHigh, Exclusive) {irqs}``: descriptor 0x89.

    Flags: bit 0 consumer, bit 1 edge (so 0 is level), bit 2 active low, bit 3 shared.
    """
    if not irqs or len(irqs) > 255:
        raise ValueError("an Interrupt descriptor lists 1-255 interrupts")
    flags = (1 if consumer else 0) | (0 if level else 2) | (4 if active_low else 0)
    flags |= 8 if shared else 0
    body = bytes([flags, len(irqs)]) + b"".join(i.to_bytes(4, "little") for i in irqs)
    return bytes([EXTENDED_INTERRUPT_TAG]) + len(body).to_bytes(2, "little") + body


def end_tag(descriptors: bytes) -> bytes:
    """The End Tag (0x79) whose checksum makes ``descriptors`` plus the tag sum to zero."""
    return bytes([END_TAG, (-(sum(descriptors) + END_TAG)) & 0xFF])


def resource_template(*descriptors: bytes) -> bytes:
    """``ResourceTemplate() { descriptors }``: a Buffer ending in a checksummed End Tag."""
    body = b"".join(descriptors)
    return buffer(body + end_tag(body))
