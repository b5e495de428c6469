"""Reverse execution latency over a long trace, and what checkpoints cost in memory.

Records the `pio` guest (one exit per loop iteration), opens it in the replay engine
(checkpoints every --every exits while replaying forward), then measures:
  reverse-stepi at many positions (p50/p95; target p95 <= 100 ms),
  reverse-continue to a breakpoint hit d exits back, for d in 1e2, 1e4, 1e6 (as the trace
  allows), and the memory the checkpoints hold.

    python bench/reverse.py [--exits 1100000] [--every 1000]
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

from elftools.elf.elffile import ELFFile  # noqa: E402

from rrvmm.host.terminal import SerialHost  # noqa: E402
from rrvmm.launch import record_guest  # noqa: E402
from rrvmm.machine.cpu_choice import make_backend  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402
from rrvmm.replay.container import open_trace  # noqa: E402
from rrvmm.replay.engine import ReplayEngine  # noqa: E402
from rrvmm.target import Position  # noqa: E402

MEMORY = 32 << 20


def symbol(elf_path: Path, name: str) -> int:
    with elf_path.open("rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"]
    raise KeyError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exits", type=int, default=1_100_000, help="trace length (pio loop count)")
    ap.add_argument("--every", type=int, default=1000, help="checkpoint interval in exits")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    kernel = REPO / "guests" / "build" / "pio.mb"
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "pio.rrt"
        images = GuestImages.load(kernel)
        config = MachineConfig(memory=MEMORY, cmdline=f"n={args.exits}", kernel_name="pio.mb")
        cpu = make_backend("kvm", MEMORY)
        t0 = time.perf_counter()
        result, _ = record_guest(
            images, config, cpu, SerialHost(output=io.BytesIO(), input_fd=None), trace
        )
        cpu.close()
        print(f"recorded {result.exits} exits in {time.perf_counter() - t0:.1f}s,"
              f" {trace.stat().st_size / 1024:.0f} KiB")  # fmt: skip
        with open_trace(trace) as reader:
            eng = ReplayEngine(reader, checkpoint_every=args.every)
            t0 = time.perf_counter()
            eng.resume()  # to the end, taking checkpoints on the way
            fwd = time.perf_counter() - t0
            total = eng.position().exit_index
            mem = sum(c.memory_bytes for c in eng.checkpoints.values())
            cpu_state = sum(len(c.cpu["xsave"]) if "xsave" in c.cpu else 0
                            for c in eng.checkpoints.values())  # fmt: skip
            print(f"engine forward to exit {total}: {fwd:.1f}s ({total / fwd:,.0f} exits/s),"
                  f" {len(eng.checkpoints)} checkpoints")  # fmt: skip
            print(f"checkpoint memory: base image {len(eng._base) * 4} KiB, pages "
                  f"{mem / 1024:.0f} KiB total = {mem / max(1, len(eng.checkpoints)):.0f} B"
                  f" per checkpoint (+ ~{cpu_state // max(1, len(eng.checkpoints))} B vCPU"
                  " xsave each)")  # fmt: skip

            # reverse-stepi at spread-out positions (each a few steps into an interval)
            lat = []
            for i in range(args.samples):
                k = int(total * (i + 1) / (args.samples + 1))
                eng.goto(Position(k, 3))
                t0 = time.perf_counter()
                eng.resume(reverse=True, step=True)
                lat.append(time.perf_counter() - t0)
                assert eng.position() == Position(k, 2), eng.position()
            lat.sort()
            p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
            print(f"reverse-stepi: p50 {statistics.median(lat) * 1e3:.1f} ms,"
                  f" p95 {p95 * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms"
                  f" over {len(lat)} positions (target p95 <= 100 ms)")  # fmt: skip

            # reverse-continue to the single hit of kmain's entry, d exits back
            bp = symbol(REPO / "guests" / "build" / "pio.elf", "kmain")
            eng.add_breakpoint(bp)
            eng.goto_exit(0)
            eng.resume()
            hit = eng.position().exit_index
            for d in (100, 10_000, 1_000_000):
                if hit + d > total:
                    print(f"reverse-continue d={d:>9,}: trace too short")
                    continue
                eng.goto_exit(hit + d)
                t0 = time.perf_counter()
                stop = eng.resume(reverse=True)
                dt = time.perf_counter() - t0
                assert eng.position().exit_index == hit, (stop, eng.position())
                print(f"reverse-continue d={d:>9,} exits: {dt * 1e3:9.1f} ms")
            eng.close()


if __name__ == "__main__":
    main()
