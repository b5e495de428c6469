"""`rrvmm trace info|dump|stats`: what a trace holds, for people and for scripts."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any, TextIO

from rrvmm.cpu.backend import ExitKind
from rrvmm.replay.container import TraceError, TraceReader
from rrvmm.replay.events import EventKind, describe

__all__ = ["run", "info", "stats"]


def info(reader: TraceReader) -> dict[str, Any]:
    h = reader.header
    images = {
        name: {"path": e["path"], "sha256": e["sha256"], "size": e["size"]}
        for name, e in h.get("images", {}).items()
    }
    out: dict[str, Any] = {
        "path": str(reader.path),
        "rrvmm": h.get("rrvmm"),
        "backend": h.get("backend"),
        "machine": h.get("machine"),
        "created": h.get("created"),
        "images": images,
        "cpuid_leaves": len(h.get("cpuid", [])),
        "chunks": len(reader.chunks),
        "events": reader.event_count,
        "last_exit": reader.chunks[-1].last_exit if reader.chunks else 0,
        "complete": not reader.truncated,
    }
    if reader.footer:
        out["end"] = {k: reader.footer.get(k) for k in ("status", "reason", "exits")}
    if "chaos" in h:  # a chaos recording: its seed and bounds, and what the dice did
        out["chaos"] = {**h["chaos"], **(reader.footer or {}).get("chaos", {})}
    from rrvmm.replay.pack import carried, is_packed

    out["packed"] = is_packed(reader)
    if out["packed"]:
        # name -> what the trace carries: the image (or symbol file), its sha256, its size
        # and the bytes it takes in the trace (compressed).
        out["carries"] = {
            row["name"]: {k: row[k] for k in ("what", "sha256", "size", "stored")}
            for row in carried(reader)
        }
    return out


def stats(reader: TraceReader) -> dict[str, Any]:
    events: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    injections = 0
    for _idx, ev in reader.events():
        kind = EventKind(ev[0])
        events[kind.name] += 1
        if kind == EventKind.EXIT:
            exits[ExitKind(ev[1]).name] += 1
        elif kind == EventKind.INJECT or (kind == EventKind.IRQ_LINE and ev[2]):
            injections += 1  # kernel irqchip: a raised line is the injection
    s = reader.stats()
    per_chunk = []
    for c in reader.chunks:
        n = c.last_exit - c.first_exit + 1
        if n > 0:
            per_chunk.append((c.comp_len + 48) / n)
    total_exits = sum(exits.values())
    return {
        "exits": total_exits,
        "exit_kinds": dict(exits.most_common()),
        "events": dict(events.most_common()),
        "injections": injections,
        "file_bytes": s.file_bytes,
        "payload_bytes": s.payload_bytes,
        "uncompressed_bytes": s.uncompressed_bytes,
        "compression_ratio": round(s.compression_ratio, 2),
        "bytes_per_exit": round(s.file_bytes / total_exits, 4) if total_exits else None,
        "median_chunk_bytes_per_exit": round(statistics.median(per_chunk), 4)
        if per_chunk
        else None,
        "complete": not reader.truncated,
    }


def run(action: str, reader: TraceReader, as_json: bool, out: TextIO) -> int:
    try:
        if action == "info":
            data = info(reader)
            if as_json:
                _emit(data, as_json, out)
            else:
                from rrvmm.replay.info_text import format_info

                out.write(format_info(data, reader.footer))
        elif action == "stats":
            _emit(stats(reader), as_json, out)
        else:
            for idx, ev in reader.events():
                d = {"exit": idx, **describe(ev)}
                if as_json:
                    out.write(json.dumps(d) + "\n")
                else:
                    rest = " ".join(
                        f"{k}={_fmt(v)}" for k, v in d.items() if k not in ("exit", "event")
                    )
                    out.write(f"{idx:>10} {d['event']:<9} {rest}\n")
    except TraceError as e:
        from rrvmm.errors import ExitStatus, RrvmmError

        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    return 0


def _fmt(v: object) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _emit(data: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(data, out, indent=2)
        out.write("\n")
        return
    for k, v in data.items():
        if isinstance(v, dict):
            out.write(f"{k}:\n")
            for k2, v2 in v.items():
                out.write(f"  {k2}: {v2}\n")
        else:
            out.write(f"{k}: {v}\n")
