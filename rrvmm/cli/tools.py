"""Command line of the trace tools: `rrvmm pack`, `rrvmm trace timeline`, `rrvmm trace diff`.

``add_subcommands(sub, trace_sub)`` registers them on the main parser (``sub``: the
top-level subparsers; ``trace_sub``: the subparsers of ``rrvmm trace``). Each handler is the
parser's ``func`` default: it takes the parsed arguments and returns the exit status, and
reports user errors as ``RrvmmError`` like the rest of the CLI. Long operations draw a
progress line on stderr when it is a terminal and print nothing of the kind into pipes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["add_subcommands", "add_trace_actions", "Progress", "progress_for"]


class Progress:
    """A one-line progress display on a terminal: ``label 42% (detail)``, redrawn at most
    every ``interval`` seconds and only once the operation has taken ``delay`` seconds."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        unit: str = "",
        delay: float = 0.5,
        interval: float = 0.2,
    ) -> None:
        self.label = label
        self.stream = stream
        self.unit = unit
        self.delay = delay
        self.interval = interval
        self._start = time.monotonic()
        self._last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._start < self.delay or now - self._last < self.interval:
            return
        self._last = now
        pct = f"{100 * done // total:3d}%" if total > 0 else "   ?"
        if self.unit == "bytes":
            detail = f"{_size(done)} of {_size(total)}"
        else:
            detail = f"{self.unit} {done} of {total}".strip()
        self.stream.write(f"\r\033[Krrvmm: {self.label} {pct} ({detail})")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def progress_for(label: str, unit: str = "", stream: TextIO | None = None) -> Progress | None:
    """A Progress on stderr if it is a terminal, else None (quiet in pipes and files)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Progress(label, stream, unit=unit) if tty else None


def add_subcommands(
    sub: argparse._SubParsersAction,
    trace_sub: argparse._SubParsersAction | None = None,
) -> None:
    """Register ``pack`` on ``sub`` and, if given, ``timeline`` and ``diff`` on ``trace_sub``."""
    p = sub.add_parser(
        "pack",
        help="make a trace self-contained: store its images (and symbols) inside",
        description="Write a copy of TRACE that carries every image it was recorded with "
        "(stored once by sha256, compressed), so it replays without the original files.",
    )
    p.add_argument("trace")
    p.add_argument("-o", "--output", help="packed trace (default: TRACE with .packed.rrt)")
    p.add_argument(
        "--symbols",
        action="append",
        default=[],
        metavar="ELF",
        help="also carry this symbol file (repeatable)",
    )
    p.add_argument("--kernel", help="the kernel image, if not at the recorded path")
    p.add_argument("--initrd", help="the initrd image, if not at the recorded path")
    p.add_argument("--disk", help="the disk image, if not at the recorded path")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(func=cmd_pack)
    if trace_sub is not None:
        add_trace_actions(trace_sub)


def add_trace_actions(trace_sub: argparse._SubParsersAction) -> None:
    """Register ``timeline`` and ``diff`` as actions of ``rrvmm trace``."""
    t = trace_sub.add_parser(
        "timeline",
        help="draw a trace: exits by kind, interrupts, forced exits, serial lines",
        description="Exits per bucket by kind, interrupt injections, forced exits and the "
        "guest's serial lines on the trace's own time axis (the exit index), as a PNG or as "
        "Chrome/Perfetto trace-event JSON (open it in ui.perfetto.dev).",
    )
    t.add_argument("trace")
    t.add_argument("-o", "--output", required=True, metavar="FILE.png|FILE.json")
    t.add_argument("--buckets", type=int, default=None, help="time buckets (default 300)")
    t.set_defaults(func=cmd_timeline)
    d = trace_sub.add_parser(
        "diff",
        help="first input that differs between two recordings of the same guest",
        description="Walk two traces of the same guest and images in lockstep and report the "
        "first exit at which their inputs differ, then a summary of what differs after. "
        "Exit status: 0 no difference, 1 different.",
    )
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KIND[,KIND]",
        help="do not compare the values of these event kinds (e.g. CLOCK,TIMER)",
    )
    d.set_defaults(func=cmd_diff)


def _trace_error(e: Exception) -> RrvmmError:
    return RrvmmError(str(e), ExitStatus.BAD_TRACE)


def cmd_pack(args: argparse.Namespace) -> int:
    from rrvmm.replay.pack import pack_trace

    overrides = {
        k: v
        for k, v in (("kernel", args.kernel), ("initrd", args.initrd), ("disk", args.disk))
        if v
    }
    progress = progress_for("packing", unit="bytes")
    try:
        result = pack_trace(
            args.trace,
            args.output,
            symbols=args.symbols,
            overrides=overrides,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.clear()
    if args.json:
        json.dump(
            {
                "output": str(result.output),
                "complete": result.complete,
                "source_bytes": result.source_bytes,
                "packed_bytes": result.packed_bytes,
                "chunks": result.chunks,
                "events": result.events,
                "carries": result.carried,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    carries = ", ".join(f"{r['name']} ({r['size']} -> {r['stored']} bytes)" for r in result.carried)
    print(
        f"rrvmm: packed {args.trace} into {result.output}: {result.packed_bytes} bytes,"
        f" carrying {carries}",
        file=sys.stderr,
    )
    if not result.complete:
        print(
            f"rrvmm: note: {args.trace} is incomplete (the recording did not finish);"
            " so is the packed trace",
            file=sys.stderr,
        )
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from rrvmm.replay.container import TraceError, open_trace
    from rrvmm.replay.timeline import DEFAULT_BUCKETS, png_title, scan, write_json, write_png

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".json"):
        raise RrvmmError(f"timeline output {out} must end in .png or .json", ExitStatus.USAGE)
    buckets = DEFAULT_BUCKETS if args.buckets is None else args.buckets
    if buckets < 1:
        raise RrvmmError(f"--buckets {buckets}: must be at least 1", ExitStatus.USAGE)
    if not out.parent.is_dir():
        raise RrvmmError(
            f"cannot write {out}: directory {out.parent} does not exist", ExitStatus.NO_INPUT
        )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    progress = progress_for("timeline: exit")
    try:
        with open_trace(args.trace) as reader:
            if suffix == ".json":
                with open(tmp, "w", encoding="utf-8") as f:
                    tl = write_json(reader, f, buckets=buckets, progress=progress)
            else:
                tl = scan(reader, buckets=buckets, progress=progress)
                write_png(tl, tmp, png_title(reader, tl))
        os.replace(tmp, out)
    except TraceError as e:
        raise _trace_error(e) from None
    except OSError as e:
        raise RrvmmError(f"cannot write {out}: {e.strerror}", ExitStatus.NO_INPUT) from None
    finally:
        if progress is not None:
            progress.clear()
        tmp.unlink(missing_ok=True)
    t = tl.totals
    print(
        f"rrvmm: wrote {out}: {t['exits']} exits, {t['injections']} injections,"
        f" {t['forced_exits']} forced exits, {t['serial_lines']} serial lines",
        file=sys.stderr,
    )
    return 0


def _ignored(values: list[str]):  # noqa: ANN202
    from rrvmm.replay.events import EventKind

    kinds = set()
    for value in values:
        for name in filter(None, (v.strip().upper() for v in value.split(","))):
            try:
                kinds.add(EventKind[name])
            except KeyError:
                choices = ", ".join(k.name for k in EventKind)
                raise RrvmmError(
                    f"--ignore {name}: not an event kind (one of {choices})", ExitStatus.USAGE
                ) from None
    return frozenset(kinds)


def cmd_diff(args: argparse.Namespace) -> int:
    from rrvmm.replay.container import TraceError, open_trace
    from rrvmm.replay.diff import diff_traces, format_text

    ignore = _ignored(args.ignore)
    progress = progress_for("diff: exit")
    try:
        with open_trace(args.a) as a, open_trace(args.b) as b:
            result = diff_traces(a, b, ignore=ignore, progress=progress)
    except TraceError as e:
        raise _trace_error(e) from None
    finally:
        if progress is not None:
            progress.clear()
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(result))
    return 0 if result.identical else 1
