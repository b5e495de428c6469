"""How much more often guests/flaky's timer race shows under `record --chaos`.

M plain and M chaos recordings of the same guest, through `rrvmm hunt` itself (with
--keep M, so no hunt stops early), side by side; prints both failure rates per backend.

    make -C guests && python bench/chaos_rate.py [--runs 20] [-j 2] [--backend soft kvm]

On the software CPU a plain recording lands every timer tick at the same instruction, so
its rate is 0 or 1 by construction (the guest is tuned so that it passes); on KVM the
host decides where kicks land, so plain recordings fail now and then, more on a busy host.
Measured here (20 + 20 runs each): soft plain 0%, chaos 55%; KVM (kvm_pvm, load ~12)
plain 65%, chaos 60%: its kicks were 0.3-7 ms late already, beyond chaos's bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL = REPO / "guests" / "build" / "flaky.mb"
# KVM here runs guests in its instruction emulator, ~1000x slower than the software CPU:
# a slower timer and a shorter update keep the fast path (and so the race) reachable
GUEST_ARGS = {"soft": "ticks=5", "kvm": "hz=100 ticks=20 spin=10 margin=1000"}


def rates(backend: str, runs: int, jobs: int, chaos: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rrvmm", "hunt", "--runs", str(runs), "--keep",
               str(runs), "-j", str(jobs), "--json", "-o", out, "--timeout", "600"]  # fmt: skip
        if not chaos:
            cmd.append("--no-chaos")
        cmd += ["--", "--backend", backend, "--kernel", str(KERNEL), "--append",
                GUEST_ARGS[backend]]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if p.returncode not in (0, 1):
            sys.exit(f"hunt failed ({p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--backend", nargs="+", default=["soft"], choices=("soft", "kvm"))
    args = ap.parse_args()
    if not KERNEL.exists():
        sys.exit(f"{KERNEL} missing: run make -C guests")
    print(f"{'backend':>8} {'mode':>6} {'runs':>5} {'failing':>8} {'rate':>7} {'s/run':>6}")
    for backend in args.backend:
        for chaos in (False, True):
            s = rates(backend, args.runs, args.jobs, chaos)
            rate = s["reproduction_rate"] or 0.0
            per_run = s["elapsed_s"] * args.jobs / max(1, s["runs"])
            mode = "chaos" if chaos else "plain"
            print(f"{backend:>8} {mode:>6} {s['runs']:>5} {s['failures']:>8} {100 * rate:>6.0f}%"
                  f" {per_run:>6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
