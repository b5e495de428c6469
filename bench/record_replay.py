"""Record overhead, replay speed and trace size, measured side by side in one run.

For each guest: plain run, record, replay (best of --repeat), then
  record overhead = record / run,  replay speed = replay / record,
  trace bytes per exit (whole file) and the median over chunks.

    python bench/record_replay.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rrvmm.host.terminal import SerialHost  # noqa: E402
from rrvmm.launch import record_guest, replay_trace, run_guest  # noqa: E402
from rrvmm.machine.cpu_choice import make_backend  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402
from rrvmm.replay.container import open_trace  # noqa: E402

MEMORY = 32 << 20
CASES = [
    ("pio", "n=20000", "exit-heavy: an OUT per loop iteration"),
    ("timer", "", "HLT-driven: 20 PIT ticks at 100 Hz"),
    ("irqhash", "hz=1000 loops=1", "landing-heavy: interrupts in exit-free loops"),
]


def _serial() -> SerialHost:
    return SerialHost(output=io.BytesIO(), input_fd=None)


def one(kernel: Path, append: str, trace: Path) -> tuple[float, float, float, int, float, float]:
    images = GuestImages.load(kernel)
    config = MachineConfig(memory=MEMORY, cmdline=append, kernel_name=kernel.name)
    cpu = make_backend("kvm", MEMORY)
    t0 = time.perf_counter()
    run_guest(images, config, cpu, _serial())
    t_run = time.perf_counter() - t0
    cpu.close()
    cpu = make_backend("kvm", MEMORY)
    t0 = time.perf_counter()
    result, _ = record_guest(images, config, cpu, _serial(), trace)
    t_rec = time.perf_counter() - t0
    cpu.close()
    with open_trace(trace) as reader:
        t0 = time.perf_counter()
        outcome = replay_trace(reader, output=io.BytesIO())
        t_rep = time.perf_counter() - t0
        assert outcome.matched, outcome.divergence
        per_chunk = [
            (c.comp_len + 48) / max(1, c.last_exit - c.first_exit + 1) for c in reader.chunks
        ]
    size = trace.stat().st_size
    return t_run, t_rec, t_rep, result.exits, size / result.exits, statistics.median(per_chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    print(f"{'guest':<8} {'exits':>7} {'run s':>7} {'record s':>9} {'replay s':>9} "
          f"{'rec/run':>8} {'rep/rec':>8} {'B/exit':>7} {'median':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, append, what in CASES:
            kernel = REPO / "guests" / "build" / f"{name}.mb"
            runs = [one(kernel, append, Path(tmp) / f"{name}.rrt") for _ in range(args.repeat)]
            t_run = min(r[0] for r in runs)
            t_rec = min(r[1] for r in runs)
            t_rep = min(r[2] for r in runs)
            exits, bpe, med = runs[-1][3], runs[-1][4], runs[-1][5]
            print(
                f"{name:<8} {exits:>7} {t_run:>7.3f} {t_rec:>9.3f} {t_rep:>9.3f} "
                f"{t_rec / t_run:>7.2f}x {t_rep / t_rec:>7.2f}x {bpe:>7.3f} {med:>7.3f}   # {what}"
            )


if __name__ == "__main__":
    main()
