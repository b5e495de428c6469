#!/usr/bin/env python3
"""End recordings at random moments with kill -9, SIGINT, SIGTERM and Ctrl-A x; replay each.

    scripts/signal_stress.py [--backend kvm|soft] [--runs 20] [--seed N] [--only HOW,...]

Each recording runs on a terminal (a pty, as a user's), on a compute-bound guest (no exits
for as long as it runs), a halting one (PIT ticks, sti;hlt), an I/O-heavy one (an OUT per
loop iteration) and a typing one (echo, a line typed just before the end: the moment
right after input). The guest is ended a random time after it printed its first line;
then the trace is replayed. A signalled recording must replay in full (status 0,
"matched all"); a killed one must replay to where it was cut (status 73, "cut after
exit N"). For the killed ones the table also shows how old the trace file's last write
was at the kill: what a kill -9 can lose (a compute-bound guest has nothing to write
while it computes, so there the age says nothing).

Prints one line per run and a table per (guest, way of ending): runs, replays as
expected, and the median/max seconds of the last write before a kill.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from rrvmm_cli import rrvmm, stop_recording  # noqa: E402

GUESTS = {
    "compute": ("compute", "n=100000000000", b"compute n=", b""),
    "halting": ("timer", "ticks=1000000", b"pit read-back", b""),
    "io": ("pio", "n=1000000000", b"pio n=", b""),
    "typing": ("echo", "", b"echo: type lines", b"typed line\r\x03"),
}
WAYS = ("SIGKILL", "SIGINT", "SIGTERM", "ctrl-a-x")
STATUS = {"SIGINT": 130, "SIGTERM": 143, "ctrl-a-x": 130}
_CUT = re.compile(r"cut after exit (\d+)")
_MATCHED = re.compile(r"matched all (\d+) exits")
_RECORDED = re.compile(r"recorded (\d+) exits")


def one_run(
    backend: str, which: str, how: str, delay: float, trace: Path
) -> tuple[bool, str, float | None]:
    """(replayed as expected, one-line detail, age of the last write at a kill)."""
    name, append, ready, keys = GUESTS[which]
    kernel = REPO / "guests" / "build" / f"{name}.mb"
    rec = stop_recording(
        "record", "--backend", backend, "--kernel", str(kernel), "--append", append,
        "-o", str(trace), ready=ready, keys=keys, delay=delay, how=how, timeout=300,
    )  # fmt: skip
    ended = time.time()
    age = ended - trace.stat().st_mtime if how == "SIGKILL" and trace.exists() else None
    rep = rrvmm("replay", str(trace), stdin=None, timeout=900)
    last = (rep.err.strip().splitlines() or [""])[-1]
    if how == "SIGKILL":
        cut = _CUT.search(rep.err)
        ok = rep.status == 73 and cut is not None and "Traceback" not in rep.err + rec.err
        return ok, f"killed; replay {rep.status}: {last}", age
    recorded = _RECORDED.search(rec.err)
    matched = _MATCHED.search(rep.err)
    ok = (
        rec.status == STATUS[how]
        and rep.status == 0
        and recorded is not None
        and matched is not None
        and recorded.group(1) == matched.group(1)
        and "Traceback" not in rec.err + rep.err
        and "Exception ignored" not in rec.err
    )
    summary = recorded.group(0) if recorded else "no summary line"
    return ok, f"record {rec.status} ({summary}); replay {rep.status}: {last}", None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="kvm", choices=("kvm", "soft"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default=",".join(WAYS), help="ways to end, comma-separated")
    ap.add_argument("--guests", default=",".join(GUESTS), help="guests, comma-separated")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"backend {args.backend}, {args.runs} runs each, seed {seed}", flush=True)
    table: dict[tuple[str, str], list[tuple[bool, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="rrvmm-signals-") as tmp:
        for how in args.only.split(","):
            for which in args.guests.split(","):
                if how == "ctrl-a-x" and which == "io":
                    continue  # typed keys reach the guest between its exits like any other
                for i in range(args.runs):
                    # typing: end right after the input; others anywhere in the first 3 s
                    delay = rng.uniform(0, 0.3) if which == "typing" else rng.uniform(0, 3)
                    trace = Path(tmp) / f"{which}-{how}-{i}.rrt"
                    ok, detail, age = one_run(args.backend, which, how, delay, trace)
                    table.setdefault((which, how), []).append((ok, age))
                    mark = "ok " if ok else "BAD"
                    print(f"{mark} {which:8} {how:8} {delay:5.2f}s  {detail}", flush=True)
                    trace.unlink(missing_ok=True)
    print()
    print("| guest | ended by | runs | replayed as expected | last write at a kill |")
    print("|---|---|---|---|---|")
    bad = 0
    for (which, how), rows in table.items():
        good = sum(ok for ok, _ in rows)
        bad += len(rows) - good
        ages = [a for _, a in rows if a is not None]
        age = f"{statistics.median(ages):.2f} / {max(ages):.2f} s" if ages else "-"
        print(f"| {which} | {how} | {len(rows)} | {good} | {age} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
