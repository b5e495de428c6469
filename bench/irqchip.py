"""User vs kernel irqchip on KVM: exits per timer interrupt, timer throughput, record cost.

Both modes run the same guests side by side in one run (best of --repeat):
  timer    HLT-idle: 20 PIT ticks at 100 Hz, the CPU halted in between
  irqhash  busy: exit-free loops interrupted by the PIT at 1 kHz and 10 kHz
and for each: exits per tick (exits / ticks the guest counted), ticks per wall second the
guest saw, and record overhead (record / run).

    python bench/irqchip.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402

from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402

MEMORY = 32 << 20
CASES = [
    ("timer", "", "HLT-idle, 100 Hz"),
    ("irqhash", "hz=1000 loops=2", "busy, 1 kHz"),
    ("irqhash", "hz=10000 loops=2", "busy, 10 kHz"),
]
MODES = ("user", "kernel")


def _ticks(out: bytes) -> int:
    m = re.search(rb"ticks=(\d+)", out)
    assert m, out
    return int(m.group(1))


def _once(kernel: Path, append: str, irqchip: str, trace: Path | None) -> tuple[float, int, int]:
    images = GuestImages.load(kernel)
    config = MachineConfig(memory=MEMORY, cmdline=append, kernel_name=kernel.name)
    wall, result, out = timed(images, config, "kvm", irqchip, trace)
    assert result.status == 0, result.reason
    return wall, result.exits, _ticks(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    print(
        f"{'guest':<8} {'case':<17} {'irqchip':<7} {'ticks':>6} {'exits':>6} {'exits/tick':>10}"
        f" {'run s':>7} {'ticks/s':>8} {'record s':>9} {'rec/run':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, append, what in CASES:
            kernel = REPO / "guests" / "build" / f"{name}.mb"
            for mode in MODES:
                runs = [_once(kernel, append, mode, None) for _ in range(args.repeat)]
                recs = [
                    _once(kernel, append, mode, Path(tmp) / f"{name}-{mode}-{i}.rrt")
                    for i in range(args.repeat)
                ]
                t_run, exits, ticks = min(runs)
                t_rec = min(r[0] for r in recs)
                print(
                    f"{name:<8} {what:<17} {mode:<7} {ticks:>6} {exits:>6}"
                    f" {exits / max(ticks, 1):>10.2f} {t_run:>7.3f} {ticks / t_run:>8.0f}"
                    f" {t_rec:>9.3f} {t_rec / t_run:>8.2f}"
                )


if __name__ == "__main__":
    main()
