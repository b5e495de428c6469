"""Checkpointing device state: ``device.state`` (a dataclass) <-> a plain msgpack-able dict.

Devices keep every mutable bit in one dataclass of plain data, so a checkpoint needs no
per-device code: ``snapshot`` walks it into ints/bools/strs/bytes/lists/dicts (tuples become
lists), ``restore`` rebuilds it from the field type hints, including nested dataclasses.
Both reject anything else loudly, and ``restore`` rejects missing or unknown fields, so a
device that grows a callable or a trace from an older layout is caught at once instead of
replaying wrongly.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

__all__ = ["snapshot", "restore", "to_plain", "from_plain"]

_SCALARS = (bool, int, str, bytes)


def snapshot(device: Any) -> dict[str, Any]:
    """A deep, plain copy of ``device.state``."""
    state = device.state
    if not dataclasses.is_dataclass(state) or isinstance(state, type):
        raise TypeError(f"{type(device).__name__}.state is not a dataclass instance")
    return to_plain(state)


def restore(device: Any, data: dict[str, Any]) -> None:
    """Replace ``device.state`` with one rebuilt from ``data`` (which is not aliased)."""
    device.state = from_plain(type(device.state), data)


def to_plain(obj: Any) -> Any:
    """Convert a state dataclass (or value inside one) to plain data."""
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"state dict key {k!r} is not a str")
            out[k] = to_plain(v)
        return out
    raise TypeError(f"{type(obj).__name__} is not plain state data: {obj!r}")


def from_plain(hint: Any, value: Any) -> Any:
    """Rebuild a value of type ``hint`` (a dataclass or a plain type) from plain data."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list:
        _expect(value, list, hint)
        return [from_plain(args[0], v) for v in value]
    if origin is tuple:
        _expect(value, list | tuple, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in value)
        return tuple(from_plain(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        _expect(value, dict, hint)
        return {k: from_plain(args[1], v) for k, v in value.items()}
    if hint is bool:
        _expect(value, bool, hint)
        return value
    if hint is int:
        if isinstance(value, bool):
            raise TypeError(f"expected int, got bool {value!r}")
        _expect(value, int, hint)
        return value
    if hint is str:
        _expect(value, str, hint)
        return value
    if hint is bytes:
        _expect(value, bytes | bytearray, hint)
        return bytes(value)
    raise TypeError(f"unsupported state field type {hint!r}")


def _expect(value: Any, kind: Any, hint: Any) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"expected {hint!r}, got {type(value).__name__} {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A state class's field types: evaluating the annotations (strings, under
    ``from __future__ import annotations``) is most of a restore's cost, and they do not
    change (the replay debugger restores devices at every step back)."""
    return typing.get_type_hints(cls)


def _build_dataclass(cls: type, data: Any) -> Any:
    _expect(data, dict, cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    missing = names - data.keys()
    unknown = data.keys() - names
    if missing or unknown:
        raise ValueError(
            f"{cls.__name__}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}"
        )
    hints = _hints(cls)
    values = {f.name: from_plain(hints[f.name], data[f.name]) for f in fields}
    obj = cls(**{f.name: values[f.name] for f in fields if f.init})
    for f in fields:
        if not f.init:
            setattr(obj, f.name, values[f.name])
    return obj
