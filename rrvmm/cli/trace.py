"""`rrvmm trace info|dump|stats|timeline|diff`: look at traces without replaying them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rrvmm.cli.progress import progress_for
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.store import resolve

__all__ = ["add_parser", "TRACE_HELP"]

TRACE_HELP = "trace file, or a name in the trace store (`rrvmm ls`); default: the latest"


def add_parser(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "trace",
        help="inspect, draw or compare traces",
        description="Look at traces without replaying them: what one holds (info), its events"
        " (dump), counts and sizes (stats), a picture (timeline), where two differ (diff),"
        " the files a packed one carries (extract). TRACE is a file or a name in the trace"
        " store; without one, the latest recording.",
    )
    trace_sub = tr.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("info", "what a trace holds: header, images, end, packed or not"),
        ("dump", "every event, one per line"),
        ("stats", "counts and sizes"),
    ):
        a = trace_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("trace", nargs="?", help=TRACE_HELP)
        a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=_cmd_trace)
    _add_timeline_diff(trace_sub)
    x = trace_sub.add_parser(
        "extract",
        help="write out the files a packed trace carries (symbols, images)",
        description="Give back what `rrvmm pack` stored: the symbol files (--symbols DIR)"
        " and the kernel/initrd images (--images DIR), under their original names.",
    )
    x.add_argument("trace", nargs="?", help=TRACE_HELP)
    x.add_argument("--symbols", metavar="DIR", help="write the symbol files here")
    x.add_argument("--images", metavar="DIR", help="write the kernel and initrd images here")
    x.set_defaults(func=cmd_extract)


def _add_timeline_diff(trace_sub: argparse._SubParsersAction) -> None:
    """Register ``timeline`` and ``diff`` as actions of ``rrvmm trace``."""
    t = trace_sub.add_parser(
        "timeline",
        help="draw a trace: exits by kind, interrupts, forced exits, serial lines",
        description="Exits by kind, interrupt injections and forced exits per unit of guest "
        "time, and the guest's serial lines, along guest time (the exit index above it), as "
        "a PNG or as Chrome/Perfetto trace-event JSON (open it in ui.perfetto.dev).",
    )
    t.add_argument("trace", nargs="?", help=TRACE_HELP)
    t.add_argument("-o", "--output", required=True, metavar="FILE.png|FILE.json")
    t.add_argument(
        "--buckets", type=int, default=None, help="time buckets (default 300; fewer if short)"
    )
    t.set_defaults(func=cmd_timeline)
    d = trace_sub.add_parser(
        "diff",
        help="first input that differs between two recordings of the same guest",
        description="Walk two traces of the same guest and images in lockstep and report the "
        "first exit at which their inputs differ, then a summary of what differs after. "
        "Exit status: 0 no difference, 1 different.",
    )
    d.add_argument("a", metavar="A", help="the first trace (file or name in the store)")
    d.add_argument("b", metavar="B", help="the second trace, compared with A")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KIND[,KIND]",
        help="do not compare the values of these event kinds (e.g. CLOCK,TIMER)",
    )
    d.set_defaults(func=cmd_diff)


def cmd_extract(args: argparse.Namespace) -> int:
    from rrvmm.replay.container import TraceError, open_trace
    from rrvmm.replay.symbol_files import extract_files

    if args.symbols is None and args.images is None:
        raise RrvmmError("trace extract: give --symbols DIR and/or --images DIR", ExitStatus.USAGE)
    dirs = [Path(d) if d is not None else None for d in (args.symbols, args.images)]
    for d in dirs:
        if d is not None and not d.is_dir():
            raise RrvmmError(f"cannot write to {d}: not a directory", ExitStatus.NO_INPUT)
    try:
        with open_trace(resolve(args.trace)) as reader:
            written = extract_files(reader, dirs[0], dirs[1])
    except TraceError as e:
        raise _trace_error(e) from None
    except OSError as e:
        raise RrvmmError(f"cannot write {e.filename}: {e.strerror}", ExitStatus.NO_INPUT) from None
    if not written:
        raise RrvmmError(
            "the trace carries none of these (rrvmm pack --symbols ELF stores them)",
            ExitStatus.NO_INPUT,
        )
    for path in written:
        print(path)
    return 0


def _trace_error(e: Exception) -> RrvmmError:
    return RrvmmError(str(e), ExitStatus.BAD_TRACE)


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
        with open_trace(resolve(args.trace)) as reader:
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
        with open_trace(resolve(args.a)) as a, open_trace(resolve(args.b)) as b:
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


def _cmd_trace(args: argparse.Namespace) -> int:
    from rrvmm.replay import inspect
    from rrvmm.replay.container import open_trace

    with open_trace(resolve(args.trace)) as reader:
        return inspect.run(args.action, reader, args.json, sys.stdout)
