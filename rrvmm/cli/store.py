"""`rrvmm ls` and `rrvmm rm`: the trace store (see ``rrvmm.store``) from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rrvmm import store

__all__ = ["add_parsers", "describe", "human_bytes", "human_ns"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser(
        "ls",
        help="list the traces in the trace store",
        description="List the traces in the trace store ($RRVMM_TRACE_DIR, else"
        " $XDG_DATA_HOME/rrvmm/traces or ~/.local/share/rrvmm/traces), oldest first: name,"
        " kernel, exits, guest time, size, packed or not, and how the recording ended."
        " The newest is marked with *; `rrvmm replay` without a trace replays it.",
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_cmd_ls)
    rm = sub.add_parser(
        "rm",
        help="delete traces from the trace store",
        description="Delete traces of the trace store by name (as `rrvmm ls` shows them)."
        " Files outside the store are never touched.",
    )
    rm.add_argument("names", nargs="+", metavar="NAME", help="trace name, e.g. hello-0")
    rm.set_defaults(func=_cmd_rm)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def human_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def describe(path: Path) -> dict[str, Any]:
    """One row of `rrvmm ls` (``error`` set for a file that is no readable trace)."""
    from rrvmm.replay.container import TraceReader
    from rrvmm.replay.pack import is_packed
    from rrvmm.replay.schema import TRACE_SCHEMA

    row: dict[str, Any] = {"name": store.trace_name(path), "path": str(path)}
    try:
        row["size"] = path.stat().st_size
        # checked like every command's traces: a crafted footer is a damaged row, not a
        # traceback when the table prints it
        with TraceReader(path, schema=TRACE_SCHEMA) as reader:
            header, footer = reader.header, reader.footer or {}
            kernel = (header.get("images") or {}).get("kernel") or {}
            row["kernel"] = Path(str(kernel.get("path", "?"))).name
            row["backend"] = header.get("backend")
            row["created"] = header.get("created")
            row["exits"] = (
                footer.get("exits")
                if footer
                else (reader.chunks[-1].last_exit if reader.chunks else 0)
            )
            row["guest_ns"] = footer.get("guest_ns")
            row["packed"] = is_packed(reader)
            row["complete"] = not reader.truncated
            if reader.truncated:
                row["end"] = "cut short (the recording did not finish)"
            else:
                row["end"] = str(footer.get("reason", "?"))
                row["status"] = footer.get("status")
    except Exception as e:  # noqa: BLE001 - a damaged file is listed, not fatal
        row["error"] = str(e) or type(e).__name__
    return row


def _cmd_ls(args: argparse.Namespace) -> int:
    paths = store.store_traces()
    newest = store.latest()
    rows = [describe(p) | {"latest": p.resolve() == newest} for p in paths]
    if args.json:
        json.dump({"store": str(store.store_dir()), "traces": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"rrvmm: no traces in {store.store_dir()}", file=sys.stderr)
        return 0
    table = [("NAME", "KERNEL", "EXITS", "GUEST TIME", "SIZE", "PACKED", "END")]
    for r in rows:
        name = ("*" if r["latest"] else " ") + r["name"]
        if "error" in r:
            table.append((name, "?", "-", "-", human_bytes(r.get("size", 0)), "-", r["error"]))
            continue
        table.append(
            (
                name,
                r["kernel"],
                str(r["exits"]),
                human_ns(r["guest_ns"]),
                human_bytes(r["size"]),
                "yes" if r["packed"] else "no",
                r["end"],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        pairs = enumerate(zip(row[:-1], widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        print("  ".join(cells) + "  " + row[-1])
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    for name in args.names:
        path = store.remove(name)
        print(f"rrvmm: removed {path}", file=sys.stderr)
    return 0
