"""`rrvmm trace timeline`: a picture of a run, from its trace alone (nothing is replayed).

One streaming pass over the events gives, on the trace's own time axis (the exit index):

* exits per bucket of exits, split by exit kind;
* interrupt injections (INJECT events, or IRQ_LINE raises with the kernel irqchip) and
  forced exits (LANDING events);
* the guest's serial output lines, rebuilt from the recorded port writes: the bytes the guest
  wrote to COM1's transmit register (port 0x3f8 while LCR.DLAB, bit 7 of port 0x3fb, is
  clear). Multi-byte and ``rep outs`` writes are split into byte writes to consecutive
  ports exactly as the device bus does, so for a guest that drives COM1 by port I/O the
  text is exact; the result is checked against the footer's ``serial_sha256`` and reported
  as ``serial_exact``.

The PNG is drawn with matplotlib (Agg, no display needed); the JSON is the Chrome/Perfetto
trace-event format (``{"traceEvents": [...]}``) that ui.perfetto.dev and chrome://tracing
open: ``ts`` is the exit index (shown by the viewers as microseconds), exits per bucket are
``"C"`` counter events (one per bucket, one argument per exit kind), and every injection,
forced exit and serial line is an ``"i"`` instant event. Memory stays bounded: instants are
written to the file as they are found, and only per-bucket counts are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rrvmm.cpu.backend import ExitKind
from rrvmm.replay.container import TraceReader
from rrvmm.replay.events import EventKind

__all__ = [
    "Timeline",
    "SerialDecoder",
    "scan",
    "write_json",
    "write_png",
    "png_title",
    "write_timeline",
]

COM1_THR = 0x3F8
COM1_LCR = 0x3FB
_COM1_END = 0x400
_LCR_DLAB = 0x80
DEFAULT_BUCKETS = 300
_LABELLED_LINES = 24  # serial lines whose text is printed on the PNG
_LINE_MARKS = 20000  # serial line positions kept for the PNG (beyond: per-bucket counts)
_TEXT_MAX = 200

# Perfetto "threads" of the one process that stands for the guest
PID = 1
TID_EXITS, TID_INJECT, TID_FORCED, TID_SERIAL = 1, 2, 3, 4

Progress = Callable[[int, int], None]
Instant = Callable[[str, int, dict[str, Any]], None]

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
class Timeline:
    """Per-bucket series of one trace; bucket ``b`` covers exits [b*width, (b+1)*width)."""

    name: str
    width: int  # exits per bucket
    buckets: int
    last_exit: int
    exits: dict[str, list[int]]  # exit kind -> exits per bucket
    injections: list[int]
    forced: list[int]
    serial: list[int]  # serial lines completed per bucket
    line_marks: list[int] = field(default_factory=list)  # exit index of each line (capped)
    labels: list[tuple[int, str]] = field(default_factory=list)  # first lines, with text
    totals: dict[str, Any] = field(default_factory=dict)


def _bucket_width(last_exit: int, buckets: int) -> int:
    return max(1, -(-(last_exit + 1) // max(1, buckets)))


def scan(
    reader: TraceReader,
    *,
    buckets: int = DEFAULT_BUCKETS,
    instant: Instant | None = None,
    progress: Progress | None = None,
) -> Timeline:
    """One pass over the trace; ``instant(kind, exit, args)`` sees every point event."""
    last_exit = reader.chunks[-1].last_exit if reader.chunks else 0
    width = _bucket_width(last_exit, buckets)
    n = last_exit // width + 1
    exits: dict[str, list[int]] = {}
    injections, forced, serial = [0] * n, [0] * n, [0] * n
    tl = Timeline(Path(reader.path).name, width, n, last_exit, exits, injections, forced, serial)
    decoder = SerialDecoder()
    exit_names = {int(k): k.name for k in ExitKind}
    counts = {"exits": 0, "injections": 0, "forced_exits": 0, "serial_lines": 0}
    last_rip = 0
    last_kind = 0
    step = max(1, last_exit // 200)
    next_tick = 0

    def line_done(at: int, text: str) -> None:
        serial[at // width] += 1
        counts["serial_lines"] += 1
        if len(tl.line_marks) < _LINE_MARKS:
            tl.line_marks.append(at)
        if len(tl.labels) < _LABELLED_LINES:
            tl.labels.append((at, text))
        if instant is not None:
            instant("serial", at, {"text": text})

    idx = 0
    for idx, ev in reader.events():
        kind = ev[0]
        if kind == _EXIT:
            ek = ev[1]
            name = exit_names.get(ek) or f"KIND_{ek}"
            series = exits.get(name)
            if series is None:
                series = exits[name] = [0] * n
            series[idx // width] += 1
            counts["exits"] += 1
            last_rip, last_kind = ev[5], ek
            if ek == _IO_OUT:
                sent = decoder.out(ev[2], ev[3], ev[4])
                if sent:
                    for at, text in decoder.lines(sent, idx):
                        line_done(at, text)
            if progress is not None and idx >= next_tick:
                progress(idx, last_exit)
                next_tick = idx + step
        elif kind == _INJECT or (kind == _IRQ_LINE and ev[2]):
            injections[idx // width] += 1
            counts["injections"] += 1
            if instant is not None:
                what = "vector" if kind == _INJECT else "irq"  # kernel irqchip: a raised line
                instant("inject", idx, {what: ev[1], "rip": last_rip})
        elif kind == _LANDING:
            forced[idx // width] += 1
            counts["forced_exits"] += 1
            if instant is not None:
                why = exit_names.get(last_kind, str(last_kind))
                instant("forced", idx, {"exit_kind": why, "rip": last_rip, "progressed": ev[3]})
    for at, text in decoder.rest(idx):
        line_done(at, text)
    if progress is not None:
        progress(last_exit, last_exit)
    footer = reader.footer or {}
    recorded = footer.get("serial_sha256")
    tl.totals = {
        **counts,
        "serial_bytes": decoder.bytes,
        "serial_exact": None if recorded is None else decoder.sha.hexdigest() == recorded,
        "last_exit": last_exit,
        "exits_per_bucket": width,
        "complete": not reader.truncated,
    }
    return tl


def _instant_name(kind: str, args: dict[str, Any]) -> str:
    if kind == "inject":
        return f"inject {args['vector']:#x}"
    if kind == "forced":
        return f"forced exit ({args['exit_kind']})"
    return args["text"][:80] or "(empty line)"


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


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
    out.write('{"traceEvents":[\n')
    meta = [
        {"ph": "M", "name": "process_name", "pid": PID, "args": {"name": f"{kernel.name}: {name}"}},
        *(
            {"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}}
            for tid, label in (
                (TID_EXITS, "exits"),
                (TID_INJECT, "interrupt injections"),
                (TID_FORCED, "forced exits"),
                (TID_SERIAL, "serial output"),
            )
        ),
    ]
    out.write(",\n".join(_dump(m) for m in meta))
    cats = {"inject": "interrupt", "forced": "forced", "serial": "serial"}
    tids = {"inject": TID_INJECT, "forced": TID_FORCED, "serial": TID_SERIAL}

    def instant(kind: str, exit_index: int, args: dict[str, Any]) -> None:
        event = {
            "ph": "i",
            "s": "t",
            "name": _instant_name(kind, args),
            "cat": cats[kind],
            "ts": exit_index,
            "pid": PID,
            "tid": tids[kind],
            "args": {"exit": exit_index, **args},
        }
        out.write(",\n" + _dump(event))

    tl = scan(reader, buckets=buckets, instant=instant, progress=progress)
    kinds = sorted(tl.exits)
    for b in range(tl.buckets):
        args = {k: tl.exits[k][b] for k in kinds}
        event = {"ph": "C", "name": "exits", "cat": "exits", "ts": b * tl.width, "pid": PID}
        out.write(",\n" + _dump({**event, "tid": TID_EXITS, "args": args}))
    other = {
        "trace": name,
        "time_axis": "exit index (ts = exit index; viewers label it microseconds)",
        "exit_counter": f"exits per {tl.width} exits, by exit kind",
        "rrvmm": reader.header.get("rrvmm"),
        "backend": reader.header.get("backend"),
        **tl.totals,
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


def write_png(tl: Timeline, path: str | os.PathLike[str], title: str = "") -> None:
    """Draw the timeline: exits by kind, injections and forced exits, serial lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [b * tl.width for b in range(tl.buckets)]
    fig, (ax_exits, ax_irq, ax_serial) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 7.5), dpi=100, height_ratios=(3, 1.4, 1.6)
    )
    try:
        kinds = sorted(tl.exits, key=lambda k: -sum(tl.exits[k]))
        if kinds:
            ax_exits.stackplot(
                xs,
                [tl.exits[k] for k in kinds],
                labels=[f"{k} ({sum(tl.exits[k])})" for k in kinds],
                colors=[_KIND_COLOURS.get(k, "#bcbd22") for k in kinds],
                step="post",
            )
            ax_exits.legend(loc="upper right", fontsize=8, ncol=min(4, len(kinds)))
        ax_exits.set_ylabel(f"exits per {tl.width}")
        ax_exits.set_title(title or tl.name, fontsize=10)

        ax_irq.step(xs, tl.injections, where="post", color="#d62728", linewidth=2.2, alpha=0.6)
        ax_irq.step(xs, tl.forced, where="post", color="#17becf", linewidth=1)
        ax_irq.set_ylim(0, max(1, *tl.injections, *tl.forced) * 1.1)
        ax_irq.set_ylabel(f"per {tl.width}")
        ax_irq.legend(
            [
                f"interrupt injections ({tl.totals.get('injections', 0)})",
                f"forced exits ({tl.totals.get('forced_exits', 0)})",
            ],
            loc="upper right",
            fontsize=8,
        )

        lines = tl.totals.get("serial_lines", 0)
        if lines and len(tl.line_marks) == lines:
            ax_serial.vlines(tl.line_marks, 0, 1, color="#2ca02c", linewidth=0.8)
        elif lines:
            ax_serial.bar(xs, [min(1, c) for c in tl.serial], width=tl.width, color="#2ca02c")
        right = 0.7 * (tl.last_exit + 1)
        for row, (at, text) in enumerate(tl.labels):
            ax_serial.text(
                at, 0.92 - 0.14 * (row % 6), f" {text[:48]} ", fontsize=6.5, va="top",
                ha="right" if at > right else "left", family="monospace", clip_on=True,
            )  # fmt: skip
        ax_serial.set_ylim(0, 1)
        ax_serial.set_yticks([])
        ax_serial.set_ylabel(f"serial\n{lines} lines", fontsize=8)
        ax_serial.set_xlabel("exit index (the trace's own time)")
        ax_serial.set_xlim(0, max(1, tl.last_exit + 1))
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def png_title(reader: TraceReader, tl: Timeline) -> str:
    images = reader.header.get("images") or {}
    kernel = Path(str(images.get("kernel", {}).get("path", "?"))).name
    end = (reader.footer or {}).get("reason", "trace cut short")
    return f"{tl.name}  ({kernel}, {tl.totals['exits']} exits; {end})"


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
