"""`rrvmm trace timeline`: a picture of a run, from its trace alone (nothing is replayed).

Two streaming passes over the events. The first places every exit in guest time
(``replay.guest_time``: CLOCK readings, the software backend's instruction counts and
halts, the footer's final clock). The second gives, per bucket of guest time:

* exits by exit kind, one lane per vCPU (traces hold one vCPU today; the lanes are keyed
  by vCPU so a multi-vCPU trace only has to say whose each event is);
* interrupt injections (INJECT events, or IRQ_LINE raises with the kernel irqchip) and
  forced exits (LANDING events);
* the guest's serial output lines, rebuilt from the recorded port writes: the bytes the guest
  wrote to COM1's transmit register (port 0x3f8 while LCR.DLAB, bit 7 of port 0x3fb, is
  clear). Multi-byte and ``rep outs`` writes are split into byte writes to consecutive
  ports exactly as the device bus does, so for a guest that drives COM1 by port I/O the
  text is exact; the result is checked against the footer's ``serial_sha256`` and reported
  as ``serial_exact``.

A trace with no clock information at all (an old trace of a guest that never read the
clock) falls back to the exit index as its time axis, and says so.

The PNG is drawn with matplotlib (Agg, no display needed): guest time along the bottom, the
exit index along the top, rates per unit of guest time, serial lines as a lane of marks with
as many of their texts as fit without overlapping, legends beside the plots. The JSON is
the Chrome/Perfetto trace-event format (``{"traceEvents": [...]}``) that ui.perfetto.dev
and chrome://tracing open: ``ts`` is guest time in microseconds (the unit the viewers
assume), exits per bucket are ``"C"`` counter events (one per bucket, one argument per exit
kind), and every injection, forced exit and serial line is an ``"i"`` instant event with its
exit index in ``args``. Memory stays bounded: instants are written to the file as they are
found, and only per-bucket counts and a bounded pool of serial lines are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rrvmm.cpu.backend import ExitKind
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind
from rrvmm.replay.guest_time import GuestTimeMap, guest_time_map

__all__ = [
    "Timeline",
    "VcpuLane",
    "SerialDecoder",
    "scan",
    "write_json",
    "write_png",
    "figure",
    "png_title",
    "format_ns",
    "has_guest_time",
    "write_timeline",
]

COM1_THR = 0x3F8
COM1_LCR = 0x3FB
_COM1_END = 0x400
_LCR_DLAB = 0x80
DEFAULT_BUCKETS = 300  # at most: a short trace gets one per _MIN_PER_BUCKET exits
_MIN_PER_BUCKET = 4
_LINE_POOL = 4096  # serial lines kept as label candidates (thinned evenly beyond)
_LINE_MARKS = 20000  # serial line positions kept for the PNG (beyond: per-bucket counts)
_EVENT_MARKS = 4096  # injection / forced exit positions kept per vCPU (for sparse traces)
_TEXT_MAX = 200

# Perfetto "threads" of the one process that stands for the guest
PID = 1
TID_EXITS, TID_INJECT, TID_FORCED, TID_SERIAL = 1, 2, 3, 4

Progress = Callable[[int, int], None]
Instant = Callable[[str, int, float, dict[str, Any]], None]  # kind, exit, time-axis position, args

_EXIT = int(EventKind.EXIT)
_LANDING = int(EventKind.LANDING)
_INJECT = int(EventKind.INJECT)
_IRQ_LINE = int(EventKind.IRQ_LINE)
_IO_OUT = int(ExitKind.IO_OUT)


class SerialDecoder:
    """COM1 transmit bytes from recorded OUT exits, split into lines."""

    def __init__(self) -> None:
        self.lcr = 0
        self.line = bytearray()
        self.line_exit = 0
        self.sha = hashlib.sha256()
        self.bytes = 0

    def out(self, addr: int, size: int, value: int | bytes) -> bytes:
        """Feed one IO_OUT exit; return the bytes it transmitted."""
        if not COM1_THR <= addr < _COM1_END or size <= 0:  # the bus routes by start port
            return b""
        data = value if isinstance(value, bytes) else value.to_bytes(size, "little")
        sent = bytearray()
        for at in range(0, len(data) - size + 1, size):
            for i in range(size):
                port, byte = addr + i, data[at + i]
                if port >= _COM1_END:  # past the UART's window: the bus drops it
                    break
                if port == COM1_LCR:
                    self.lcr = byte
                elif port == COM1_THR and not self.lcr & _LCR_DLAB:
                    sent.append(byte)
        if sent:
            self.sha.update(sent)
            self.bytes += len(sent)
        return bytes(sent)

    def lines(self, sent: bytes, exit_index: int) -> list[tuple[int, str]]:
        """Add transmitted bytes; return the lines they complete as (exit index, text)."""
        done = []
        for byte in sent:
            if not self.line:
                self.line_exit = exit_index
            if byte == 0x0A:
                done.append((exit_index, _text(self.line)))
                self.line.clear()
            else:
                self.line.append(byte)
        return done

    def rest(self, exit_index: int) -> list[tuple[int, str]]:
        """The unterminated last line, if any."""
        if not self.line:
            return []
        out = [(exit_index, _text(self.line))]
        self.line.clear()
        return out


def _text(raw: bytes | bytearray) -> str:
    text = bytes(raw).decode("utf-8", errors="replace").replace("\r", "")
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


@dataclass
class VcpuLane:
    """What one vCPU did, per bucket."""

    vcpu: int
    exits: dict[str, list[int]]  # exit kind -> exits per bucket
    injections: list[int]
    forced: list[int]
    inject_marks: list[float] = field(default_factory=list)  # positions, the first _EVENT_MARKS
    forced_marks: list[float] = field(default_factory=list)


@dataclass
class Timeline:
    """Per-bucket series of one trace; bucket ``b`` covers ``[b*width, (b+1)*width)`` of the
    time axis: guest nanoseconds (``axis == "guest_ns"``), or exit indices (``"exit"``) for
    a trace that holds no clock information."""

    name: str
    axis: str
    width: float  # guest ns (or exits) per bucket
    buckets: int
    span: float  # the end of the axis: guest ns at the last exit (or last exit + 1)
    last_exit: int
    clock: GuestTimeMap
    lanes: list[VcpuLane]  # one per vCPU, by vCPU number
    serial: list[int]  # serial lines completed per bucket
    line_marks: list[float] = field(default_factory=list)  # axis position of each line (capped)
    lines: list[tuple[float, int, str]] = field(default_factory=list)  # (pos, exit, text) pool
    last_line: tuple[float, int, str] | None = None
    totals: dict[str, Any] = field(default_factory=dict)


def has_guest_time(clock: GuestTimeMap) -> bool:
    """The trace says when its exits happened (else the time axis is the exit index)."""
    return clock.known and clock.end_ns > 0


def _lane(lanes: dict[int, VcpuLane], vcpu: int, n: int) -> VcpuLane:
    lane = lanes.get(vcpu)
    if lane is None:
        lane = lanes[vcpu] = VcpuLane(vcpu, {}, [0] * n, [0] * n)
    return lane


def _vcpu_of(ev: list) -> int:
    """The vCPU an event belongs to: traces have one vCPU, numbered 0."""
    return 0


def scan(
    reader: TraceReader,
    *,
    buckets: int = DEFAULT_BUCKETS,
    instant: Instant | None = None,
    progress: Progress | None = None,
    clock: GuestTimeMap | None = None,
) -> Timeline:
    """Two passes over the trace (one if ``clock`` is given); ``instant(kind, exit, pos,
    args)`` sees every point event (injection, forced exit, serial line) in trace order,
    ``pos`` on the time axis (guest ns, or the exit index where ``has_guest_time`` is
    false)."""
    last_exit = reader.chunks[-1].last_exit if reader.chunks else 0
    if clock is None:
        half = None if progress is None else (lambda i, n: progress(i // 2, n))
        clock = guest_time_map(reader, half)
    by_time = has_guest_time(clock)
    if by_time:
        span = float(clock.end_ns)
        n = max(1, min(buckets, last_exit // _MIN_PER_BUCKET))  # a short trace: fewer, fuller
        width = span / n
    else:  # whole exits per bucket
        span = float(last_exit + 1)
        width = float(max(1, -(-(last_exit + 1) // max(1, buckets))))
        n = int(-(-span // width))

    def pos(exit_index: int) -> float:
        return clock.at(exit_index) if by_time else float(exit_index)

    def bucket(x: float) -> int:
        return min(n - 1, max(0, int(x / width)))

    lanes: dict[int, VcpuLane] = {}
    _lane(lanes, 0, n)
    serial = [0] * n
    tl = Timeline(
        Path(reader.path).name, "guest_ns" if by_time else "exit", width, n, span,
        last_exit, clock, [], serial,
    )  # fmt: skip
    decoder = SerialDecoder()
    exit_names = {int(k): k.name for k in ExitKind}
    counts = {"exits": 0, "injections": 0, "forced_exits": 0, "serial_lines": 0}
    last_rip = 0
    last_kind = 0
    step = max(1, last_exit // 200)
    next_tick = 0
    pool_stride = 1  # keep every pool_stride-th line in the label pool

    def line_done(at: int, text: str) -> None:
        nonlocal pool_stride
        x = pos(at)
        serial[bucket(x)] += 1
        number = counts["serial_lines"]
        counts["serial_lines"] += 1
        if len(tl.line_marks) < _LINE_MARKS:
            tl.line_marks.append(x)
        if number % pool_stride == 0:
            tl.lines.append((x, at, text))
            if len(tl.lines) >= _LINE_POOL:
                tl.lines = tl.lines[::2]
                pool_stride *= 2
        tl.last_line = (x, at, text)
        if instant is not None:
            instant("serial", at, x, {"text": text})

    idx = 0
    x = 0.0
    here = -1  # the exit whose position x holds
    for idx, ev in reader.events():
        if idx != here:
            x, here = pos(idx), idx  # events of one exit share its position
        kind = ev[0]
        if kind == _EXIT:
            lane = _lane(lanes, _vcpu_of(ev), n)
            ek = ev[1]
            name = exit_names.get(ek) or f"KIND_{ek}"
            series = lane.exits.get(name)
            if series is None:
                series = lane.exits[name] = [0] * n
            series[bucket(x)] += 1
            counts["exits"] += 1
            last_rip, last_kind = ev[5], ek
            if ek == _IO_OUT:
                sent = decoder.out(ev[2], ev[3], ev[4])
                if sent:
                    for at, text in decoder.lines(sent, idx):
                        line_done(at, text)
            if progress is not None and idx >= next_tick:
                progress((last_exit + idx) // 2, last_exit)
                next_tick = idx + step
        elif kind == _INJECT or (kind == _IRQ_LINE and ev[2]):
            lane = _lane(lanes, _vcpu_of(ev), n)
            lane.injections[bucket(x)] += 1
            if len(lane.inject_marks) < _EVENT_MARKS:
                lane.inject_marks.append(x)
            counts["injections"] += 1
            if instant is not None:
                what = "vector" if kind == _INJECT else "irq"  # kernel irqchip: a raised line
                instant("inject", idx, x, {what: ev[1], "rip": last_rip})
        elif kind == _LANDING:
            lane = _lane(lanes, _vcpu_of(ev), n)
            lane.forced[bucket(x)] += 1
            if len(lane.forced_marks) < _EVENT_MARKS:
                lane.forced_marks.append(x)
            counts["forced_exits"] += 1
            if instant is not None:
                why = exit_names.get(last_kind, str(last_kind))
                args = {"exit_kind": why, "rip": last_rip, "progressed": ev[3]}
                instant("forced", idx, x, args)
    for at, text in decoder.rest(idx):
        line_done(at, text)
    if progress is not None:
        progress(last_exit, last_exit)
    tl.lanes = [lanes[v] for v in sorted(lanes)]
    footer = reader.footer or {}
    recorded = footer.get("serial_sha256")
    tl.totals = {
        **counts,
        "serial_bytes": decoder.bytes,
        "serial_exact": None if recorded is None else decoder.sha.hexdigest() == recorded,
        "last_exit": last_exit,
        "vcpus": len(tl.lanes),
        "time_axis": tl.axis,
        "guest_ns": clock.end_ns if clock.known else None,
        "bucket_ns": width if by_time else None,
        "complete": not reader.truncated,
    }
    return tl


def _instant_name(kind: str, args: dict[str, Any]) -> str:
    if kind == "inject":
        what = f"{args['vector']:#x}" if "vector" in args else f"IRQ{args['irq']}"
        return f"inject {what}"
    if kind == "forced":
        return f"forced exit ({args['exit_kind']})"
    return args["text"][:80] or "(empty line)"


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _us(ns: float) -> float:
    return round(ns / 1000, 3)


def write_json(
    reader: TraceReader,
    out: IO[str],
    *,
    buckets: int = DEFAULT_BUCKETS,
    progress: Progress | None = None,
) -> Timeline:
    """The Chrome/Perfetto trace-event JSON of the trace, written as it is computed."""
    name = Path(reader.path).name
    kernel = Path(str((reader.header.get("images") or {}).get("kernel", {}).get("path", "?")))
    half = None if progress is None else (lambda i, n: progress(i // 2, n))
    clock = guest_time_map(reader, half)
    by_time = has_guest_time(clock)
    out.write('{"traceEvents":[\n')
    meta = [
        {"ph": "M", "name": "process_name", "pid": PID, "args": {"name": f"{kernel.name}: {name}"}},
        *(
            {"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}}
            for tid, label in (
                (TID_EXITS, "vCPU 0 exits"),
                (TID_INJECT, "interrupt injections"),
                (TID_FORCED, "forced exits"),
                (TID_SERIAL, "serial output"),
            )
        ),
    ]
    out.write(",\n".join(_dump(m) for m in meta))
    cats = {"inject": "interrupt", "forced": "forced", "serial": "serial"}
    tids = {"inject": TID_INJECT, "forced": TID_FORCED, "serial": TID_SERIAL}

    def ts(x: float) -> float:
        return _us(x) if by_time else x

    def instant(kind: str, exit_index: int, x: float, args: dict[str, Any]) -> None:
        event = {
            "ph": "i",
            "s": "t",
            "name": _instant_name(kind, args),
            "cat": cats[kind],
            "ts": ts(x),
            "pid": PID,
            "tid": tids[kind],
            "args": {"exit": exit_index, **args},
        }
        out.write(",\n" + _dump(event))

    tl = scan(reader, buckets=buckets, instant=instant, progress=progress, clock=clock)
    for lane in tl.lanes:  # one counter track per vCPU ("exits" for vCPU 0)
        kinds = sorted(lane.exits)
        track = "exits" if lane.vcpu == 0 else f"vCPU {lane.vcpu} exits"
        for b in range(tl.buckets):
            args = {k: lane.exits[k][b] for k in kinds}
            event = {"ph": "C", "name": track, "cat": "exits", "ts": ts(b * tl.width), "pid": PID}
            out.write(",\n" + _dump({**event, "tid": TID_EXITS, "args": args}))
    per = f"{_us(tl.width)} us of guest time" if by_time else f"{tl.width:g} exits"
    axis = (
        "guest time (ts in microseconds); args.exit is the exit index"
        if by_time
        else "exit index (ts = exit index: the trace holds no guest time)"
    )
    other = {
        **tl.totals,
        "trace": name,
        "time_axis": axis,
        "exit_counter": f"exits per bucket of {per}, by exit kind",
        "rrvmm": reader.header.get("rrvmm"),
        "backend": reader.header.get("backend"),
    }
    out.write('\n],\n"displayTimeUnit":"ms",\n"otherData":' + _dump(other) + "}\n")
    return tl


# fixed colours so the same exit kind looks the same in every picture
_KIND_COLOURS = {
    "IO_OUT": "#1f77b4",
    "IO_IN": "#ff7f0e",
    "MMIO_WRITE": "#2ca02c",
    "MMIO_READ": "#d62728",
    "HLT": "#9467bd",
    "IRQ_WINDOW": "#8c564b",
    "INTR": "#e377c2",
    "SHUTDOWN": "#7f7f7f",
}
_UNITS = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns"))
_RASTER_PER_BUCKET = 4  # fewer interrupts than this per bucket: one mark each, not a rate
_PEAK_FACTOR = 6  # exit rates above this many times a typical busy bucket are clipped
_LABEL_ROWS = 7
_LABEL_CHARS = 60
_LABEL_GAP_PX = 8
_LABEL_FONT = 6.5
_NOTABLE = re.compile(r"panic|oops|bug|error|fail|warn|segfault|killed|trap", re.IGNORECASE)


def _unit(span_ns: float) -> tuple[float, str]:
    """The largest unit in which the span is at least 1 (axis ticks stay short)."""
    for scale, name in _UNITS:
        if span_ns >= scale:
            return scale, name
    return 1.0, "ns"


def format_ns(ns: float) -> str:
    """A guest duration for people: ``1.47 s``, ``36.6 ms``, ``412 µs``."""
    scale, name = _unit(ns)
    return f"{ns / scale:.3g} {name}"


def _spread(n: int) -> list[int]:
    """0..n-1 in an order that covers the range evenly early: ends, middle, quarters, ..."""
    if n <= 0:
        return []
    order, seen = [], set()
    ranges = [(0, n - 1)]
    for i in (0, n - 1):
        if i not in seen:
            seen.add(i)
            order.append(i)
    while ranges:
        nxt = []
        for lo, hi in ranges:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            if mid not in seen:
                seen.add(mid)
                order.append(mid)
            nxt += [(lo, mid), (mid, hi)]
        ranges = nxt
    order += [i for i in range(n) if i not in seen]
    return order


def _label_order(tl: Timeline) -> list[tuple[float, int, str]]:
    """Serial lines to try labelling, most wanted first: the last line (how the run ended),
    lines that report trouble, then the rest spread evenly over the run."""
    pool = [line for line in tl.lines if line[2].strip()]
    if tl.last_line is not None and tl.last_line[2].strip() and tl.last_line not in pool:
        pool.append(tl.last_line)
    if not pool:
        return []
    notable = [line for line in pool if _NOTABLE.search(line[2])]
    spread = [pool[i] for i in _spread(len(pool))]
    first = [pool[-1], *notable[:: max(1, len(notable) // 8)]]
    out, seen = [], set()
    for line in [*first, *spread]:
        if line[1:] not in seen:
            seen.add(line[1:])
            out.append(line)
    return out


def _draw_serial(ax: Any, tl: Timeline, scale: float) -> int:
    """Marks for every serial line and as many texts as fit without overlapping; returns
    how many texts were drawn."""
    lines = tl.totals.get("serial_lines", 0)
    if lines and len(tl.line_marks) == lines:
        ax.vlines([x / scale for x in tl.line_marks], 0, 0.1, color="#2ca02c", linewidth=0.6)
    elif lines:
        edges = [b * tl.width / scale for b in range(tl.buckets)]
        ax.bar(edges, [0.1 if c else 0 for c in tl.serial], width=tl.width / scale,
               align="edge", color="#2ca02c")  # fmt: skip
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    probe = ax.text(0, 0, "M" * 10, fontsize=_LABEL_FONT, family="monospace")
    char_px = probe.get_window_extent(renderer).width / 10
    probe.remove()
    left_px, right_px = ax.transData.transform([(0, 0), (tl.span / scale, 0)])[:, 0]
    taken: list[list[tuple[float, float]]] = [[] for _ in range(_LABEL_ROWS)]
    drawn = 0
    for x, _exit, text in _label_order(tl):
        text = " ".join(text.split())  # "[    1.234567] x" -> "[ 1.234567] x": room for words
        label = " " + (text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…")
        px = ax.transData.transform((x / scale, 0))[0]
        w = char_px * len(label)
        a, b, ha = (px, px + w, "left") if px + w <= right_px else (px - w, px, "right")
        if a < left_px:
            continue
        for row, spans in enumerate(taken):
            if all(b + _LABEL_GAP_PX <= s or a >= e + _LABEL_GAP_PX for s, e in spans):
                spans.append((a, b))
                y = 0.96 - row * (0.84 / _LABEL_ROWS)
                ax.plot([x / scale], [y - 0.05], marker="|", color="#2ca02c", markersize=4)
                ax.text(
                    x / scale, y, label, fontsize=_LABEL_FONT, family="monospace", va="top",
                    ha=ha, parse_math=False, clip_on=True,
                )  # fmt: skip
                drawn += 1
                break
    return drawn


def _exit_label(e: float) -> str:
    return f"{round(e):,}"


def _clip_peaks(ax: Any, edges: Any, totals: list[int], rate: Callable) -> None:
    """Keep a few huge buckets (a calibration loop, a burst of output) from flattening the
    rest: above ``_PEAK_FACTOR`` times the typical busy bucket, clip and say so."""
    from matplotlib.ticker import EngFormatter

    busy = sorted(v for v in rate(totals) if v > 0)
    if len(busy) < 4:
        return
    typical = busy[(len(busy) * 3) // 4]
    limit = typical * _PEAK_FACTOR
    if busy[-1] <= limit * 1.2:
        return
    ax.set_ylim(0, limit)
    values = rate(totals)
    for b, v in enumerate(values):
        if v > limit:
            ax.plot([(edges[b] + edges[b + 1]) / 2], [limit], marker="^", color="black",
                    markersize=4, clip_on=False)  # fmt: skip
    peak = max(values)
    note = f"clipped ▲: peak {EngFormatter(places=1, sep='')(peak)}"
    ax.text(0.995, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)


def _shade_halts(ax: Any, tl: Timeline, scale: float) -> None:
    """Grey bands where the guest was halted (the software backend records its halts), so
    an idle guest does not look like one busy without exits."""
    if not tl.clock.halts:
        return
    join = tl.span / 2000  # closer than about a pixel: one band
    bands: list[list[float]] = []
    for start, end in tl.clock.halts:
        if bands and start - bands[-1][1] <= join:
            bands[-1][1] = end
        else:
            bands.append([start, end])
    total = sum(end - start for start, end in tl.clock.halts)
    for n, (start, end) in enumerate(bands):
        label = f"halted ({format_ns(total)})" if n == 0 else None
        ax.axvspan(start / scale, max(end, start + join) / scale, color="#d9d9d9", zorder=0,
                   linewidth=0, label=label)  # fmt: skip


def _draw_interrupts(
    ax: Any, lane: VcpuLane, edges: Any, rate: Callable, scale: float, per_label: str,
    legend: dict[str, Any],
) -> None:  # fmt: skip
    """Injections and forced exits: one mark each where they are few (a rate over buckets
    holding zero or one of them would only show aliasing), else rates per unit of time."""
    from matplotlib.ticker import EngFormatter

    inj, forced = sum(lane.injections), sum(lane.forced)
    labels = (f"interrupts injected ({inj})", f"forced exits ({forced})")
    colours = ("#d62728", "#17becf")
    sparse = inj + forced <= _RASTER_PER_BUCKET * len(lane.injections)
    if sparse and len(lane.inject_marks) == inj and len(lane.forced_marks) == forced:
        for row, marks in enumerate((lane.inject_marks, lane.forced_marks)):
            y0 = 0.55 if row == 0 else 0.05
            ax.vlines([x / scale for x in marks], y0, y0 + 0.4, color=colours[row],
                      linewidth=0.8, label=labels[row])  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_yticks([0.75, 0.25], ["injected", "forced"], fontsize=8)
        ax.set_ylabel("each one", fontsize=9)
    else:
        steps = [*rate(lane.injections), 0], [*rate(lane.forced), 0]
        ax.step(edges, steps[0], where="post", color=colours[0], linewidth=2.0, alpha=0.6,
                label=labels[0])  # fmt: skip
        ax.step(edges, steps[1], where="post", color=colours[1], linewidth=1.0, label=labels[1])
        top = max(1.0, *steps[0], *steps[1])
        ax.set_ylim(0, top * 1.15)
        if top >= 1000:
            ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel(per_label, fontsize=9)
    ax.legend(**legend)


def write_png(tl: Timeline, path: str | os.PathLike[str], title: str = "") -> None:
    """Draw the timeline (``figure``) into a PNG file."""
    import matplotlib.pyplot as plt

    fig = figure(tl, title)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def figure(tl: Timeline, title: str = "") -> Any:
    """The timeline as a matplotlib Figure (the caller closes it): per vCPU, exits by kind
    and interrupts/forced exits as rates per unit of guest time; then the serial lines.
    Guest time below, the exit index above; the last axes is the serial lane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import EngFormatter, FuncFormatter

    by_time = tl.axis == "guest_ns"
    scale, unit = _unit(tl.span) if by_time else (1.0, "")
    per = tl.width / scale  # axis units per bucket
    rate = (lambda c: [v / per for v in c]) if by_time else (lambda c: list(c))
    per_label = f"per {unit}" if by_time else f"per {tl.width:g} exits"
    edges = np.arange(tl.buckets + 1) * (tl.width / scale)

    def steps(values: list) -> list:
        return [*values, values[-1] if values else 0]  # step="post" to the last edge

    ratios = [r for _ in tl.lanes for r in (3.0, 1.1)] + [2.0]
    fig = plt.figure(figsize=(14, 1.6 + 2.1 * sum(ratios) / 2), dpi=100)
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.14,
                            left=0.07, right=0.79, top=0.9, bottom=0.08)  # fmt: skip
    axes: list[Any] = []
    try:
        for row in range(len(ratios)):
            axes.append(fig.add_subplot(grid[row], sharex=axes[0] if axes else None))
        legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8,
                  "borderaxespad": 0.0, "frameon": False}  # fmt: skip
        for i, lane in enumerate(tl.lanes):
            ax_exits, ax_irq = axes[2 * i], axes[2 * i + 1]
            if by_time and i == 0:  # halts are not told apart by vCPU yet
                _shade_halts(ax_exits, tl, scale)
            kinds = sorted(lane.exits, key=lambda k: -sum(lane.exits[k]))
            if kinds:
                ax_exits.stackplot(
                    edges,
                    [steps(rate(lane.exits[k])) for k in kinds],
                    labels=[f"{k} ({sum(lane.exits[k])})" for k in kinds],
                    colors=[_KIND_COLOURS.get(k, "#bcbd22") for k in kinds],
                    step="post",
                )
                ax_exits.legend(title=f"vCPU {lane.vcpu} exits", title_fontsize=8, **legend)
            totals = [sum(c) for c in zip(*lane.exits.values(), strict=True)]
            _clip_peaks(ax_exits, edges, totals, rate)
            ax_exits.yaxis.set_major_formatter(EngFormatter(sep=""))
            ax_exits.set_ylabel(f"vCPU {lane.vcpu}\nexits {per_label}", fontsize=9)
            _draw_interrupts(ax_irq, lane, edges, rate, scale, per_label, legend)
        ax_serial = axes[-1]
        ax_serial.set_xlim(0, max(tl.span / scale, 1e-9))
        ax_serial.set_ylim(0, 1)
        ax_serial.set_yticks([])
        lines = tl.totals.get("serial_lines", 0)
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        fig.canvas.draw()  # lay out once, so label widths measure true pixels
        shown = _draw_serial(ax_serial, tl, scale)
        ax_serial.set_ylabel(f"serial\n{lines} lines", fontsize=9)
        ax_serial.text(1.01, 1.0, f"serial output\n{shown} of {lines} lines\nlabelled",
                       transform=ax_serial.transAxes, fontsize=8, va="top")  # fmt: skip
        if by_time:
            how = (f"guest time exact at\n{tl.clock.anchored} of {tl.last_exit} exits;\n"
                   "the others spread\nevenly between")  # fmt: skip
            axes[0].text(1.01, 0.0, how, transform=axes[0].transAxes, fontsize=7.5,
                         va="bottom", color="#555555")  # fmt: skip
        if by_time:
            ax_serial.set_xlabel(f"guest time ({unit})")
            # the exit index above the guest-time ticks (exits are far from even in time,
            # so ticks evenly spaced in exits would pile up where the guest exits a lot)
            top_axis = axes[0].secondary_xaxis("top")
            top_axis.xaxis.set_major_formatter(
                FuncFormatter(lambda t, _pos: _exit_label(tl.clock.exit_at(t * scale)))
            )
            top_axis.set_xlabel("exit index at that guest time", fontsize=9)
        else:
            ax_serial.set_xlabel("exit index (this trace holds no guest time)")
        fig.suptitle(title or tl.name, fontsize=10, x=0.43)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def png_title(reader: TraceReader, tl: Timeline) -> str:
    images = reader.header.get("images") or {}
    kernel = Path(str(images.get("kernel", {}).get("path", "?"))).name
    end = (reader.footer or {}).get("reason", "trace cut short")
    when = f", {format_ns(tl.span)} of guest time" if tl.axis == "guest_ns" else ""
    backend = reader.header.get("backend", "?")
    return f"{tl.name}  ({kernel} on {backend}, {tl.totals['exits']} exits{when}; {end})"


def write_timeline(
    reader: TraceReader,
    output: str | os.PathLike[str],
    *,
    buckets: int = DEFAULT_BUCKETS,
    progress: Progress | None = None,
) -> Timeline:
    """PNG or JSON by the output's suffix (ValueError for anything else)."""
    suffix = Path(output).suffix.lower()
    if suffix == ".json":
        with open(output, "w", encoding="utf-8") as f:
            return write_json(reader, f, buckets=buckets, progress=progress)
    if suffix == ".png":
        tl = scan(reader, buckets=buckets, progress=progress)
        write_png(tl, output, png_title(reader, tl))
        return tl
    raise ValueError(f"timeline output must end in .png or .json, not {output}")
