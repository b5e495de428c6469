"""A small AML and resource-descriptor reader, so tests check our DSDT by parsing it back.

It knows only the terms rrvmm.machine.acpi.aml emits, and insists that every PkgLength-framed term
consumes exactly its framed bytes: a length that is off by one fails here, as it would in
the guest's interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Term:
    """One decoded term: ``kind`` is "Scope", "Device", "Method", "Name" or a data kind."""

    kind: str
    name: str = ""
    value: Any = None
    children: list[Term] | None = None


def read_pkg_length(data: bytes, pos: int) -> tuple[int, int]:
    """(PkgLength value, number of bytes it took) at ``pos``."""
    lead = data[pos]
    extra = lead >> 6
    if extra == 0:
        return lead & 0x3F, 1
    value = lead & 0x0F
    for i in range(extra):
        value |= data[pos + 1 + i] << (4 + 8 * i)
    return value, 1 + extra


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    out = ""
    if data[pos] == 0x5C:
        out, pos = "\\", pos + 1
    while data[pos] == 0x5E:
        out, pos = out + "^", pos + 1
    if data[pos] == 0x00:
        return out, pos + 1
    if data[pos] == 0x2E:
        count, pos = 2, pos + 1
    elif data[pos] == 0x2F:
        count, pos = data[pos + 1], pos + 2
    else:
        count = 1
    segs = [data[pos + 4 * i : pos + 4 * i + 4].decode("ascii") for i in range(count)]
    return out + ".".join(segs), pos + 4 * count


def _framed(data: bytes, pos: int) -> tuple[int, int]:
    """(start of the framed contents, end) for a PkgLength at ``pos``."""
    length, size = read_pkg_length(data, pos)
    end = pos + length
    assert end <= len(data), f"PkgLength at {pos} runs past the end ({end} > {len(data)})"
    return pos + size, end


def _read_data(data: bytes, pos: int) -> tuple[Term, int]:
    op = data[pos]
    if op in (0x00, 0x01):
        return Term("Integer", value=op), pos + 1
    if op == 0xFF:
        return Term("Integer", value=(1 << 64) - 1), pos + 1
    sizes = {0x0A: 1, 0x0B: 2, 0x0C: 4, 0x0E: 8}
    if op in sizes:
        n = sizes[op]
        return Term("Integer", value=int.from_bytes(data[pos + 1 : pos + 1 + n], "little")), (
            pos + 1 + n
        )
    if op == 0x0D:
        end = data.index(b"\x00", pos + 1)
        return Term("String", value=data[pos + 1 : end].decode("ascii")), end + 1
    if op == 0x12:
        start, end = _framed(data, pos + 1)
        count = data[start]
        elements, p = [], start + 1
        while p < end:
            element, p = _read_data(data, p)
            elements.append(element)
        assert p == end and len(elements) == count
        return Term("Package", children=elements), end
    if op == 0x11:
        start, end = _framed(data, pos + 1)
        size, p = _read_data(data, start)
        assert size.kind == "Integer" and size.value == end - p, "BufferSize != bytes framed"
        return Term("Buffer", value=bytes(data[p:end])), end
    raise AssertionError(f"unknown data opcode {op:#04x} at {pos}")


def read_terms(data: bytes, pos: int = 0, end: int | None = None) -> list[Term]:
    """Decode a TermList; it must end exactly at ``end``."""
    end = len(data) if end is None else end
    terms = []
    while pos < end:
        op = data[pos]
        if op == 0x08:
            name, p = _read_name(data, pos + 1)
            value, pos = _read_data(data, p)
            terms.append(Term("Name", name, value))
        elif op in (0x10, 0x14) or (op == 0x5B and data[pos + 1] == 0x82):
            at = pos + (2 if op == 0x5B else 1)
            start, stop = _framed(data, at)
            name, p = _read_name(data, start)
            kind = {0x10: "Scope", 0x14: "Method", 0x5B: "Device"}[op]
            if kind == "Method":  # flags, then code this reader does not decode
                terms.append(Term(kind, name, (data[p], bytes(data[p + 1 : stop]))))
            else:
                terms.append(Term(kind, name, None, read_terms(data, p, stop)))
            pos = stop
        else:
            raise AssertionError(f"unknown term opcode {op:#04x} at {pos}")
    assert pos == end, f"term list overran its frame: {pos} != {end}"
    return terms


def read_resources(buf: bytes) -> list[tuple[Any, ...]]:
    """Walk a ResourceTemplate buffer into (kind, fields...) tuples; checks the End Tag."""
    out: list[tuple[Any, ...]] = []
    pos = 0
    while True:
        tag = buf[pos]
        if tag == 0x79:
            assert pos + 2 == len(buf), "bytes after the End Tag"
            assert sum(buf) & 0xFF == 0 or buf[pos + 1] == 0, "End Tag checksum"
            return out
        assert tag & 0x80, f"unexpected small descriptor {tag:#04x}"
        length = int.from_bytes(buf[pos + 1 : pos + 3], "little")
        body = buf[pos + 3 : pos + 3 + length]
        if tag == 0x86:
            out.append(
                (
                    "Memory32Fixed",
                    body[0],
                    int.from_bytes(body[1:5], "little"),
                    int.from_bytes(body[5:9], "little"),
                )
            )
        elif tag == 0x89:
            flags, count = body[0], body[1]
            irqs = [int.from_bytes(body[2 + 4 * i : 6 + 4 * i], "little") for i in range(count)]
            out.append(("Interrupt", flags, irqs))
        else:
            out.append(("Unknown", tag, body))
        pos += 3 + length


class AmlReader:
    """What the ``aml`` fixture hands tests."""

    read_pkg_length = staticmethod(read_pkg_length)
    read_terms = staticmethod(read_terms)
    read_resources = staticmethod(read_resources)


@pytest.fixture
def aml_reader() -> AmlReader:
    return AmlReader()
