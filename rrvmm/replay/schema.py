"""What a trace's header, events and footer must look like before anything uses them.

A trace's checksums are xxh3, which anyone can recompute: a file that verifies may still
have been crafted. The replayer, ``rrvmm trace dump|stats|diff|info|timeline`` and ``pack``
index events and header fields directly, so the reader checks every value against this
schema first (``TraceReader(..., schema=TRACE_SCHEMA)``) and a bad one becomes the same one-line
"corrupt" error as a flipped byte, never a KeyError deep inside. Fields are those written by
``launch.record_guest``, ``recorder`` and ``pack``; keys this rrvmm does not know are left
alone (but bounded in depth) so a newer writer's additions stay readable.
"""

from __future__ import annotations

import math
import re
from typing import Any

from rrvmm.cpu.backend import ExitKind
from rrvmm.replay.events import EVENT_FIELDS, EventKind

__all__ = ["TRACE_SCHEMA", "check_header", "check_event", "check_footer"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_U64 = (1 << 64) - 1
_MAX_DEPTH = 16  # header and footer nest 3 deep today; json/printing recurse on them
_MAX_CPUID_LEAVES = 4096
_MAX_TEXT = 1 << 20  # a path, a command line, a reason
_MAX_MEMORY = 64 << 30  # what `--memory` accepts
_EXIT_KINDS = frozenset(int(k) for k in ExitKind)
_EVENT_KINDS = {int(k): k for k in EventKind}
_EXIT = int(EventKind.EXIT)


class _Bad(ValueError):
    """One schema violation; the message names the field."""


def _depth_ok(value: Any, limit: int = _MAX_DEPTH) -> bool:
    """True if ``value`` nests at most ``limit`` containers deep (iteratively: no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = list(item.keys()) + list(item.values())
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _int(value: Any, name: str, lo: int = 0, hi: int = _U64) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _Bad(f"{name} must be an integer in {lo}..{hi}, not {_short(value)}")
    return value


def _number(value: Any, name: str) -> float:
    if type(value) is int:
        return _int(value, name, -(1 << 63), _U64)
    if type(value) is not float or not math.isfinite(value):
        raise _Bad(f"{name} must be a finite number, not {_short(value)}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _Bad(f"{name} must be a string, not {_short(value)}")
    return value


def _sha(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _Bad(f"{name} must be a lower-case hex sha256, not {_short(value)}")
    return value


def _dict(value: Any, name: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{name} must be a map, not {_short(value)}")
    return value


def _short(value: Any) -> str:
    """A value for an error message: its type, and the value itself if it is short."""
    text = repr(value) if isinstance(value, int | float | bool | type(None)) else ""
    return f"{type(value).__name__} {text}".strip() if len(text) < 40 else type(value).__name__


def _image(entry: Any, name: str) -> None:
    entry = _dict(entry, name)
    _str(entry.get("path"), f"{name}.path")
    _sha(entry.get("sha256"), f"{name}.sha256")
    _int(entry.get("size"), f"{name}.size")


def check_header(header: dict[Any, Any]) -> None:
    """ValueError naming the first field a replay or inspection could not use."""
    if not _depth_ok(header):
        raise _Bad(f"nests deeper than {_MAX_DEPTH} levels")
    machine = _dict(header.get("machine"), "machine")
    if _int(machine.get("memory"), "machine.memory", 1 << 20, _MAX_MEMORY) % 4096:
        raise _Bad("machine.memory must be a multiple of 4 KiB")
    _str(machine.get("cmdline"), "machine.cmdline")
    if machine.get("irqchip", "user") not in ("user", "kernel"):
        raise _Bad(f"machine.irqchip must be user or kernel, not {_short(machine['irqchip'])}")
    if not isinstance(machine.get("virtio_cmdline", False), bool):
        raise _Bad("machine.virtio_cmdline must be true or false")
    disk = machine.get("disk")
    if disk is not None:
        disk = _dict(disk, "machine.disk")
        _str(disk.get("path"), "machine.disk.path")
        _sha(disk.get("sha256"), "machine.disk.sha256")
        _int(disk.get("sectors", 0), "machine.disk.sectors")
    if "backend" in header and header["backend"] not in ("kvm", "soft"):
        raise _Bad(f"backend must be kvm or soft, not {_short(header['backend'])}")
    cpuid = header.get("cpuid")
    if not isinstance(cpuid, list) or len(cpuid) > _MAX_CPUID_LEAVES:
        raise _Bad(f"cpuid must be a list of at most {_MAX_CPUID_LEAVES} leaves")
    for n, row in enumerate(cpuid):
        if not isinstance(row, list) or len(row) != 7:
            raise _Bad(f"cpuid[{n}] must be a list of 7 integers")
        for value in row:
            _int(value, f"cpuid[{n}]", 0, (1 << 32) - 1)
    images = _dict(header.get("images"), "images")
    if "kernel" not in images:
        raise _Bad("images names no kernel")
    for name, entry in images.items():
        _image(entry, f"images.{_str(name, 'image name')}")
    for key in ("cmdline", "rrvmm", "created", "host"):
        if key in header:
            _str(header[key], key)
    if "chaos" in header:  # record --chaos: the seed and the dice's bounds (trace info shows them)
        for key, value in _dict(header["chaos"], "chaos").items():
            _number(value, f"chaos.{_str(key, 'chaos key')}")
    if "packed" in header:
        symbols = _dict(header["packed"], "packed").get("symbols", [])
        if not isinstance(symbols, list):
            raise _Bad("packed.symbols must be a list")
        for n, entry in enumerate(symbols):
            _image(entry, f"packed.symbols[{n}]")
            _str(entry.get("name"), f"packed.symbols[{n}].name")


# Each kind's fields after the kind, in EVENT_FIELDS order, as specs of _PREDICATES.
_EVENT_SPECS: dict[EventKind, tuple[str, ...]] = {
    EventKind.EXIT: ("exit_kind", "u64", "u64", "u64|bytes", "u64"),
    EventKind.LANDING: ("u64", "u64", "u64", "u64", "bool", "u64?", "bool"),
    EventKind.TIMER: ("int",),
    EventKind.CLOCK: ("int",),
    EventKind.WALL: ("number",),
    EventKind.SERIAL_RX: ("bytes",),
    EventKind.INJECT: ("u8",),
    EventKind.TSC: ("int",),
    EventKind.IRQ_LINE: ("u8", "bool"),
    EventKind.DEVICE_INPUT: ("str", "bytes"),
    EventKind.ENTROPY: ("bytes",),
}

# spec -> (test, what it wants, for messages). msgpack integers already lie in
# -2^63 .. 2^64 - 1, so ``>= 0`` makes a u64 and any int an i64.
_PREDICATES: dict[str, tuple[Any, str]] = {
    "u64": (lambda v: type(v) is int and v >= 0, "an unsigned integer"),
    "int": (lambda v: type(v) is int, "an integer"),
    "u8": (lambda v: type(v) is int and 0 <= v <= 255, "an integer in 0..255"),
    "u64?": (lambda v: v is None or (type(v) is int and v >= 0), "an unsigned integer or nil"),
    "u64|bytes": (
        lambda v: type(v) is bytes or (type(v) is int and v >= 0),
        "an unsigned integer or bytes",
    ),
    "exit_kind": (lambda v: type(v) is int and v in _EXIT_KINDS, "a known exit kind"),
    # the RTC floors it: inf or nan would raise there
    "number": (
        lambda v: type(v) is int or (type(v) is float and math.isfinite(v)),
        "a finite number",
    ),
    "bool": (lambda v: type(v) is bool or type(v) is int, "true or false"),
    "bytes": (lambda v: type(v) is bytes, "bytes"),
    "str": (lambda v: type(v) is str, "a string"),
}
# kind value -> (fewest items, most items, tests): replay checks every event it reads, one
# or more per VM exit, so no message is built unless a test fails
_FAST: dict[int, tuple[int, int, tuple[Any, ...]]] = {
    int(kind): (
        len(specs) + 1 - (1 if kind == EventKind.LANDING else 0),  # ``halted`` only if true
        len(specs) + 1,
        tuple(_PREDICATES[spec][0] for spec in specs),
    )
    for kind, specs in _EVENT_SPECS.items()
}


def check_event(event: Any) -> None:
    """ValueError unless ``event`` is a known kind with the fields of that kind."""
    if type(event) is tuple and len(event) == 6 and event[0] == _EXIT and type(event[0]) is int:
        # EXIT, inline (the tests of _PREDICATES): one per VM exit, the hot path
        _, kind, addr, size, value, rip = event
        if (
            type(kind) is int and kind in _EXIT_KINDS
            and type(addr) is int and addr >= 0
            and type(size) is int and size >= 0
            and type(rip) is int and rip >= 0
            and (type(value) is bytes or (type(value) is int and value >= 0))
        ):  # fmt: skip
            return
    if type(event) is tuple or type(event) is list:
        fast = _FAST.get(event[0]) if event and type(event[0]) is int else None
        if fast is not None and fast[0] <= len(event) <= fast[1]:
            for ok, value in zip(fast[2], event[1:], strict=False):
                if not ok(value):
                    break
            else:
                return
    _check_event(event)  # to say what is wrong


def _check_event(event: Any) -> None:
    """The general check, field by field, with a message naming the first bad one."""
    if not isinstance(event, list | tuple) or not event:
        raise _Bad(f"event must be a non-empty array, not {_short(event)}")
    kind = _EVENT_KINDS.get(event[0]) if type(event[0]) is int else None
    if kind is None:
        raise _Bad(f"unknown event kind {_short(event[0])}")
    names = EVENT_FIELDS[kind]
    optional = 1 if kind == EventKind.LANDING else 0  # ``halted`` is written only if true
    if not len(names) - optional <= len(event) - 1 <= len(names):
        raise _Bad(f"{kind.name} event has {len(event) - 1} fields, expected {len(names)}")
    for name, spec, value in zip(names, _EVENT_SPECS[kind], event[1:], strict=False):
        ok, wanted = _PREDICATES[spec]
        if not ok(value):
            raise _Bad(f"{kind.name}.{name} must be {wanted}, not {_short(value)}")


def check_footer(footer: dict[Any, Any]) -> None:
    """ValueError unless the footer's totals have the types replay compares them as."""
    if not _depth_ok(footer):
        raise _Bad(f"nests deeper than {_MAX_DEPTH} levels")
    for key in ("exits", "forced_exits"):
        if key in footer:
            _int(footer[key], key)
    if "status" in footer:
        _int(footer["status"], "status", -(1 << 63), _U64)
    if "reason" in footer:
        _str(footer["reason"], "reason")
    if "serial_sha256" in footer:
        _sha(footer["serial_sha256"], "serial_sha256")
    if footer.get("guest_ns") is not None:  # `rrvmm ls`, trace info, the timeline's axis
        _int(footer["guest_ns"], "guest_ns")
    if "chaos" in footer:  # record --chaos: how often each perturbation happened
        for key, value in _dict(footer["chaos"], "chaos").items():
            _int(value, f"chaos.{_str(key, 'chaos key')}")


class _TraceSchema:
    """The rrvmm event layer's schema, as ``TraceReader`` takes it."""

    check_header = staticmethod(check_header)
    check_event = staticmethod(check_event)
    check_footer = staticmethod(check_footer)


TRACE_SCHEMA = _TraceSchema()
