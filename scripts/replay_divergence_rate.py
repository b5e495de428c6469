#!/usr/bin/env python3
"""Record a guest many times and replay each recording: how many replays diverge.

    scripts/replay_divergence_rate.py [-n 50] [--guest flaky] [--append ARGS]
        [--machine kvm-user --machine kvm-kernel] [--chaos] [--keep DIR]

Exact replay is rrvmm's promise, but a landing problem may show once in tens of
recordings (a kick that falls into a narrow window, as one right after an I/O exit did),
too rarely and too slowly for a CI test. This runs the real command line: ``rrvmm record``
of ``guests/build/<guest>.mb`` on each machine, then ``rrvmm replay``; a replay that exits
with status 72 diverged. Diverged traces (and their replay report) are kept in ``--keep``
(default: a fresh directory under /tmp) for ``rrvmm trace dump`` and a regression test;
the others are deleted.

Prints one line per machine (``kvm-user flaky: 0/50 diverged, 0 other``: "other" counts
replays that ended with another status than the recording). Exit status: 0 when nothing
diverged or differed, 1 otherwise, 2 for bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MACHINES = {
    "kvm-user": ["--backend", "kvm", "--irqchip", "user"],
    "kvm-kernel": ["--backend", "kvm", "--irqchip", "kernel"],
    "soft": ["--backend", "soft"],
}
DIVERGED = 72  # rrvmm.errors.ExitStatus.REPLAY_DIVERGED
RECORD_TIMEOUT_S = 120
REPLAY_TIMEOUT_S = 300


def _rrvmm(args: list[str], timeout: float) -> tuple[int, str]:
    """Run the CLI of this checkout; (status, stderr). A timeout is status -1."""
    try:
        r = subprocess.run(
            [sys.executable, "-m", "rrvmm", *args], cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    return r.returncode, r.stderr.decode(errors="replace")


def _summary(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "diverged" in ln] or err.splitlines()[-1:]
    return lines[0] if lines else ""


def run_machine(name: str, kernel: Path, args: argparse.Namespace, keep: Path) -> bool:
    """Record and replay ``args.n`` times on machine ``name``; True if all replayed."""
    diverged = other = 0
    extra = ["--append", args.append] if args.append else []
    if args.chaos:
        extra.append("--chaos")
    for i in range(1, args.n + 1):
        trace = keep / f"{name}-{args.guest}-{i}.rrt"
        rec, rec_err = _rrvmm(
            ["record", *MACHINES[name], "--kernel", str(kernel), *extra, "-o", str(trace)],
            RECORD_TIMEOUT_S,
        )
        if not trace.exists():
            other += 1
            print(f"  {trace.name}: recording failed ({rec}): {_summary(rec_err)}", flush=True)
            continue
        rep, rep_err = _rrvmm(["replay", str(trace)], REPLAY_TIMEOUT_S)
        if rep == DIVERGED or rep != rec:
            if rep == DIVERGED:
                diverged += 1
            else:
                other += 1
            trace.with_suffix(".err").write_text(rep_err)
            print(f"  {trace.name}: replay {rep}, record {rec}: {_summary(rep_err)}", flush=True)
        else:
            trace.unlink()
    print(f"{name} {args.guest}: {diverged}/{args.n} diverged, {other} other", flush=True)
    return diverged == 0 and other == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=50, help="recordings per machine (default 50)")
    p.add_argument("--guest", default="flaky", help="guest in guests/build (default flaky)")
    p.add_argument("--append", default="", help="the guest's command line")
    p.add_argument(
        "--machine", action="append", choices=sorted(MACHINES),
        help="machine to record on, repeatable (default kvm-user and kvm-kernel)",
    )  # fmt: skip
    p.add_argument("--chaos", action="store_true", help="record with --chaos")
    p.add_argument("--keep", type=Path, help="directory for diverged traces")
    args = p.parse_args(argv)
    if args.n < 1:
        print("replay_divergence_rate: -n must be at least 1", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    kernel = REPO / "guests" / "build" / f"{args.guest}.mb"
    if not kernel.exists():
        print(f"replay_divergence_rate: no guest {kernel}", file=sys.stderr)
        return 2
    keep = args.keep or Path(tempfile.mkdtemp(prefix="rrvmm-divergence-"))
    keep.mkdir(parents=True, exist_ok=True)
    print(f"traces of diverged replays go to {keep}", flush=True)
    ok = True
    for name in args.machine or ["kvm-user", "kvm-kernel"]:
        ok = run_machine(name, kernel, args, keep) and ok
    if ok and args.keep is None:
        shutil.rmtree(keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
