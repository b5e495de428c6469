"""`rrvmm trace diff A B`: where two recordings of the same guest first got different inputs.

Two traces of the same guest and images run the same instructions as long as they get the
same inputs, so their event streams are equal up to the first input that differs: serial
bytes, a timer that fired at another exit, a clock or wall-clock value, an interrupt
injected elsewhere, a forced exit landing elsewhere. The diff walks both streams in
lockstep, exit by exit (the exit index is the trace's own time), and reports:

* the first difference: the exit index, the event kind, both values and the guest RIP of
  the exit in each trace. When one trace has an event the other lacks at that exit (a
  TIMER or SERIAL_RX that came at another exit), the other trace's next event of the same
  kind is shown with its own exit index;
* a summary of what differs after it: differing exits (count, first, last) and differing
  events by kind, and the totals of each trace.

Memory stays bounded (one exit's events per trace, plus counters). Leading chunks that are
byte-identical in both files are compared without decoding them.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrvmm.cpu.backend import ExitKind
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind, describe

__all__ = ["DiffResult", "check_comparable", "diff_traces", "format_text", "INPUT_KINDS"]

#: Event kinds that bring something from outside into the guest.
INPUT_KINDS = frozenset(
    {
        EventKind.TIMER,
        EventKind.CLOCK,
        EventKind.WALL,
        EventKind.SERIAL_RX,
        EventKind.INJECT,
        EventKind.TSC,
        EventKind.IRQ_LINE,
        EventKind.DEVICE_INPUT,
        EventKind.ENTROPY,
    }
)
# The field that is "the value" of an event, for the report.
_VALUE_FIELD = {
    EventKind.EXIT: "value",
    EventKind.LANDING: "regs_hash",
    EventKind.TIMER: "late_ns",
    EventKind.CLOCK: "clock_ns",
    EventKind.WALL: "unix_seconds",
    EventKind.SERIAL_RX: "data",
    EventKind.INJECT: "vector",
    EventKind.TSC: "tsc_offset",
    EventKind.IRQ_LINE: "line",
    EventKind.DEVICE_INPUT: "data",
    EventKind.ENTROPY: "data",
}
_EXIT = int(EventKind.EXIT)
_FORCED = (ExitKind.INTR, ExitKind.IRQ_WINDOW)

Progress = Callable[[int, int], None]
Group = tuple[int, list[tuple]]  # (exit index, that exit's events in order)


@dataclass
class DiffResult:
    a: dict[str, Any]
    b: dict[str, Any]
    first: dict[str, Any] | None = None
    differing_exits: int = 0
    first_exit: int | None = None
    last_exit: int | None = None
    by_kind: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    skipped_chunks: int = 0

    @property
    def identical(self) -> bool:
        return self.first is None

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "a": self.a,
            "b": self.b,
            "first": self.first,
            "after": None
            if self.identical
            else {
                "differing_exits": self.differing_exits,
                "first_exit": self.first_exit,
                "last_exit": self.last_exit,
                "events_by_kind": dict(self.by_kind.most_common()),
            },
            "notes": self.notes,
        }


def check_comparable(a: TraceReader, b: TraceReader) -> list[str]:
    """RrvmmError (IMAGE_MISMATCH) unless both record the same guest, images and machine.

    Returns notes on harmless header differences (host, CPUID, backend).
    """
    ha, hb = a.header, b.header
    na, nb = Path(a.path).name, Path(b.path).name
    problems = []
    ia, ib = ha.get("images") or {}, hb.get("images") or {}
    for name in sorted(set(ia) | set(ib)):
        ea, eb = ia.get(name), ib.get(name)
        if ea is None or eb is None:
            have = na if eb is None else nb
            problems.append(f"only {have} has a {name} image")
        elif ea.get("sha256") != eb.get("sha256"):
            problems.append(
                f"{name} images differ (sha256 {str(ea.get('sha256'))[:12]}… vs"
                f" {str(eb.get('sha256'))[:12]}…)"
            )
    ma, mb = ha.get("machine") or {}, hb.get("machine") or {}
    if ma.get("memory") != mb.get("memory"):
        problems.append(f"memory differs ({ma.get('memory')} vs {mb.get('memory')} bytes)")
    ca, cb = ma.get("cmdline", ha.get("cmdline")), mb.get("cmdline", hb.get("cmdline"))
    if ca != cb:
        problems.append(f"command lines differ ({ca!r} vs {cb!r})")
    if problems:
        raise RrvmmError(
            f"{na} and {nb} are not recordings of the same guest: {'; '.join(problems)}",
            ExitStatus.IMAGE_MISMATCH,
        )
    notes = []
    if ha.get("backend") != hb.get("backend"):
        notes.append(f"recorded on different backends ({ha.get('backend')} vs {hb.get('backend')})")
    if _cpuid(ha) != _cpuid(hb):
        notes.append("the guests saw different CPUID tables (different hosts?)")
    for r, n in ((a, na), (b, nb)):
        if r.truncated:
            notes.append(f"{n} is incomplete (the recording did not finish)")
    return notes


def _cpuid(header: dict[str, Any]) -> list[list[int]]:
    """The CPUID table without EDX of leaves 0xB/0x1F: the x2APIC ID of whichever host CPU
    the recorder asked KVM on, which differs between two recordings on the same host."""
    rows = []
    for row in header.get("cpuid") or []:
        row = list(row)
        if row and row[0] in (0xB, 0x1F) and len(row) == 7:
            row[6] = 0
        rows.append(row)
    return rows


def _groups(reader: TraceReader, start: int) -> Iterator[Group]:
    """The events from exit ``start`` on, one exit at a time."""
    for idx, evs in itertools.groupby(reader.events(start), key=lambda item: item[0]):
        yield idx, [ev for _, ev in evs]


def _rip(group: list[tuple]) -> int | None:
    for ev in group:
        if ev[0] == _EXIT:
            return ev[5]
    return None


def _side(trace: str, idx: int, ev: tuple, rip: int | None, note: str = "") -> dict[str, Any]:
    d = describe(ev)
    kind = EventKind(ev[0])
    value = ev[1 + list(_field_names(kind)).index(_VALUE_FIELD[kind])]
    out: dict[str, Any] = {"trace": trace, "exit": idx, "kind": kind.name, **d}
    del out["event"]
    if isinstance(value, bytes):
        # typed text reads as text; entropy and frames are binary
        out["value"] = value.decode("latin-1") if kind == EventKind.SERIAL_RX else value.hex()
    else:
        out["value"] = value
    out["rip"] = rip
    if note:
        out["note"] = note
    return out


def _field_names(kind: EventKind) -> tuple[str, ...]:
    from rrvmm.replay.events import EVENT_FIELDS

    return EVENT_FIELDS[kind]


class _Differ:
    def __init__(
        self, a: TraceReader, b: TraceReader, ignore: frozenset[int], progress: Progress | None
    ) -> None:
        self.a, self.b = a, b
        self.ignore = ignore
        self.progress = progress
        self.names = (Path(a.path).name, Path(b.path).name)

    def equal(self, x: tuple, y: tuple) -> bool:
        return x == y or (x[0] == y[0] and x[0] in self.ignore)

    def groups_equal(self, ea: list[tuple], eb: list[tuple]) -> bool:
        if ea == eb:
            return True
        return len(ea) == len(eb) and all(map(self.equal, ea, eb))

    def first_difference(self, idx: int, ea: list[tuple], eb: list[tuple]) -> dict[str, Any]:
        """Describe how the events of exit ``idx`` differ.

        Inputs come first: if the inputs of this exit differ, the first differing input is
        reported, even when an EXIT differs before it (a host kick that delivered serial
        input shows up as a forced exit ahead of the SERIAL_RX it delivered). Otherwise the
        first differing event of any kind (a forced exit, a read value, a landing).
        """
        pa, pb = self._first_unequal(ea, eb, inputs_only=True)
        if pa is None and pb is None:
            pa, pb = self._first_unequal(ea, eb, inputs_only=False)
        x = None if pa is None else ea[pa]
        y = None if pb is None else eb[pb]
        rip_a, rip_b = _rip(ea), _rip(eb)
        na, nb = self.names
        if x is not None and y is not None and x[0] == y[0]:
            kind = EventKind(x[0])
            return {
                "exit": idx,
                "kind": kind.name,
                "what": _what_differs(kind, x, y),
                "a": _side(na, idx, x, rip_a),
                "b": _side(nb, idx, y, rip_b),
            }
        # One trace has an event the other has not (here): report the input if there is
        # one, and the other trace's next event of that kind.
        if x is not None and (y is None or x[0] in INPUT_KINDS or y[0] not in INPUT_KINDS):
            kind, has, lacks = EventKind(x[0]), "A", "B"
            other = self.next_of(self.b, kind, idx, eb, len(eb) if pb is None else pb)
            a_side = _side(na, idx, x, rip_a)
            b_side = None if other is None else _side(nb, *other, note=_next_note(kind, idx))
        else:
            assert y is not None
            kind, has, lacks = EventKind(y[0]), "B", "A"
            other = self.next_of(self.a, kind, idx, ea, len(ea) if pa is None else pa)
            b_side = _side(nb, idx, y, rip_b)
            a_side = None if other is None else _side(na, *other, note=_next_note(kind, idx))
        if other is not None:
            what = f"{kind.name} at exit {idx} in {has} but at exit {other[0]} in {lacks}"
        else:
            what = f"{kind.name} at exit {idx} in {has}, never in {lacks}"
        return {"exit": idx, "kind": kind.name, "what": what, "a": a_side, "b": b_side}

    def _first_unequal(
        self, ea: list[tuple], eb: list[tuple], *, inputs_only: bool
    ) -> tuple[int | None, int | None]:
        """Positions in ``ea``/``eb`` of the first pair of (input) events that differ;
        None for a side that has no such event left. (None, None): no difference."""
        ia = [p for p, ev in enumerate(ea) if not inputs_only or ev[0] in INPUT_KINDS]
        ib = [p for p, ev in enumerate(eb) if not inputs_only or ev[0] in INPUT_KINDS]
        q = 0
        while q < len(ia) and q < len(ib) and self.equal(ea[ia[q]], eb[ib[q]]):
            q += 1
        return (ia[q] if q < len(ia) else None), (ib[q] if q < len(ib) else None)

    def next_of(
        self, reader: TraceReader, kind: EventKind, idx: int, group: list[tuple], p: int
    ) -> tuple[int, tuple, int | None] | None:
        """The next ``kind`` event of ``reader`` from position ``p`` of its events at exit
        ``idx`` (``group``) on, with its exit index and that exit's RIP."""
        for ev in group[p:]:
            if ev[0] == kind:
                return idx, ev, _rip(group)
        for j, later in _groups(reader, idx + 1):
            for ev in later:
                if ev[0] == kind:
                    return j, ev, _rip(later)
        return None


def _next_note(kind: EventKind, idx: int) -> str:
    return f"none at exit {idx}; this is the next {kind.name}"


def _what_differs(kind: EventKind, x: tuple, y: tuple) -> str:
    if kind != EventKind.EXIT:
        return f"{kind.name} differs"
    if x[1] != y[1]:
        for ev, has, lacks in ((x, "A", "B"), (y, "B", "A")):
            if ev[1] in _FORCED:
                return f"forced exit ({ExitKind(ev[1]).name}) in {has}, not in {lacks}"
        return "exit kind differs"
    if x[1] in (ExitKind.IO_IN, ExitKind.MMIO_READ) and x[2:4] == y[2:4]:
        return "read value differs"
    return "EXIT differs"


def _summary(reader: TraceReader) -> dict[str, Any]:
    return {
        "path": str(reader.path),
        "exits": reader.chunks[-1].last_exit if reader.chunks else 0,
        "events": reader.event_count,
        "complete": not reader.truncated,
        "end": (reader.footer or {}).get("reason"),
    }


def _identical_prefix(a: TraceReader, b: TraceReader) -> tuple[int, int]:
    """(chunks equal byte for byte from the start, exit to resume the event walk from)."""
    n = 0
    while n < len(a.chunks) and n < len(b.chunks):
        if a.chunks[n][1:] != b.chunks[n][1:] or a.chunk_record(n) != b.chunk_record(n):
            break
        n += 1
    if n == 0:
        return 0, 0
    # resume at the last shared exit: its events may continue in the next chunk
    return n, a.chunks[n - 1].last_exit


def diff_traces(
    a: TraceReader,
    b: TraceReader,
    *,
    ignore: frozenset[EventKind] = frozenset(),
    progress: Progress | None = None,
) -> DiffResult:
    """Compare two traces of the same guest (RrvmmError if they are not)."""
    notes = check_comparable(a, b)
    result = DiffResult(_summary(a), _summary(b), notes=notes)
    if ignore:
        result.notes.append(", ".join(sorted(k.name for k in ignore)) + " events are not compared")
    d = _Differ(a, b, frozenset(int(k) for k in ignore), progress)
    result.skipped_chunks, start = _identical_prefix(a, b)
    end = max(result.a["exits"], result.b["exits"])
    ga, gb = _groups(a, start), _groups(b, start)
    xa, xb = next(ga, None), next(gb, None)
    step, tick = max(1, end // 200), 0
    while xa is not None or xb is not None:
        if xb is None or (xa is not None and xa[0] < xb[0]):
            assert xa is not None
            idx, ea, eb = xa[0], xa[1], []
            xa = next(ga, None)
        elif xa is None or xb[0] < xa[0]:
            idx, ea, eb = xb[0], [], xb[1]
            xb = next(gb, None)
        else:
            idx, ea, eb = xa[0], xa[1], xb[1]
            xa, xb = next(ga, None), next(gb, None)
        if progress is not None and idx >= tick:
            progress(idx, end)
            tick = idx + step
        if d.ignore:  # ignored kinds are not compared at all: neither value nor presence
            ea = [ev for ev in ea if ev[0] not in d.ignore]
            eb = [ev for ev in eb if ev[0] not in d.ignore]
        if d.groups_equal(ea, eb):
            continue
        if result.first is None:
            result.first = d.first_difference(idx, ea, eb)
            result.first_exit = idx
        result.differing_exits += 1
        result.last_exit = idx
        _count(d, ea, eb, result.by_kind)
    if progress is not None:
        progress(end, end)
    return result


def _count(d: _Differ, ea: list[tuple], eb: list[tuple], by_kind: Counter[str]) -> None:
    """Differing events of one exit, by kind: the i-th event of a kind in A against the
    i-th of that kind in B; an event with no counterpart counts as differing."""
    kinds = {ev[0] for ev in ea} | {ev[0] for ev in eb}
    for k in kinds:
        la = [ev for ev in ea if ev[0] == k]
        lb = [ev for ev in eb if ev[0] == k]
        n = abs(len(la) - len(lb)) + sum(not d.equal(x, y) for x, y in zip(la, lb, strict=False))
        if n:
            by_kind[EventKind(k).name] += n


def _fmt_value(side: dict[str, Any]) -> str:
    v = side.get("value")
    if side.get("kind") == "SERIAL_RX" and isinstance(v, str):
        return repr(v.encode("latin-1"))[1:]
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:#x}" if side.get("kind") in ("EXIT", "LANDING", "INJECT") else str(v)
    return str(v)


def _fmt_side(label: str, side: dict[str, Any] | None, kind: str) -> str:
    if side is None:
        return f"  {label}: no {kind} from here to the end of the trace"
    rip = "-" if side.get("rip") is None else f"{side['rip']:#x}"
    extra = ""
    if side["kind"] == "EXIT":
        extra = f" {side.get('exit_kind')} addr={side.get('addr', 0):#x}"
    line = f"  {label}: exit {side['exit']:<8} {side['kind']}{extra} {_fmt_value(side)}  rip {rip}"
    if side.get("note"):
        line += f"  ({side['note']})"
    return line


def format_text(r: DiffResult) -> str:
    a, b = r.a, r.b
    na, nb = Path(a["path"]).name, Path(b["path"]).name
    lines = [f"note: {n}" for n in r.notes]
    totals = (
        f"{na}: {a['exits']} exits, {a['events']} events; "
        f"{nb}: {b['exits']} exits, {b['events']} events"
    )
    if r.first is None:
        lines.append(f"no difference ({totals})")
        return "\n".join(lines) + "\n"
    f = r.first
    lines.append(f"first difference at exit {f['exit']}: {f['what']}")
    lines.append(_fmt_side(f"A {na}", f["a"], f["kind"]))
    lines.append(_fmt_side(f"B {nb}", f["b"], f["kind"]))
    kinds = ", ".join(f"{k} {n}" for k, n in r.by_kind.most_common())
    lines.append(
        f"after it: {r.differing_exits} exits differ (first {r.first_exit}, last {r.last_exit});"
        f" differing events: {kinds}"
    )
    lines.append(totals)
    return "\n".join(lines) + "\n"
