"""`rrvmm pack`: a copy of a trace that carries its images (and symbols)."""

from __future__ import annotations

import argparse
import json
import sys

from rrvmm.cli.progress import progress_for
from rrvmm.store import resolve

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="make a trace self-contained: store its images (and symbols) inside",
        description="Write a copy of TRACE that carries every image it was recorded with "
        "(stored once by sha256, compressed), so it replays without the original files.",
    )
    p.add_argument(
        "trace", nargs="?", help="trace file, or a name in the trace store; default: the latest"
    )
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


def cmd_pack(args: argparse.Namespace) -> int:
    from rrvmm.replay.pack import pack_trace

    overrides = {
        k: v
        for k, v in (("kernel", args.kernel), ("initrd", args.initrd), ("disk", args.disk))
        if v
    }
    args.trace = str(resolve(args.trace))
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
