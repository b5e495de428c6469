"""Timer interrupts through the 8259 (the PIT) vs the local APIC timer, side by side.

One run measures both sources on each backend (`--apic on` for both, so only the source
differs): the guest (guests/timerbench.c) takes N periodic ticks at a rate, waiting either
halted (sti;hlt) or in an exit-free loop. Columns: ticks the guest counted, VM exits,
exits per tick, and ticks per wall second (best of --repeat). The 8259 costs an EOI port
write per tick (and the PIT's mode-2 programming nothing more); the LAPIC one EOI MMIO
write: so exits per tick should match, and the difference is the device model's cost.

    python bench/apic_timer.py [--repeat 3] [--backends kvm,soft]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402

from rrvmm.cpu.backend import BackendUnavailable  # noqa: E402
from rrvmm.errors import RrvmmError  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402

MEMORY = 32 << 20
CASES = [  # (append, what)
    ("hz=1000 ticks=300", "halted, 1 kHz"),
    ("hz=1000 ticks=300 busy=1", "busy, 1 kHz"),
    ("hz=10000 ticks=1000 busy=1", "busy, 10 kHz"),
]
SOURCES = ("pic", "lapic")


def _once(backend: str, append: str) -> tuple[float, int, int]:
    kernel = REPO / "guests" / "build" / "timerbench.mb"
    images = GuestImages.load(kernel)
    config = MachineConfig(memory=MEMORY, cmdline=append, kernel_name=kernel.name, apic=True)
    wall, result, out = timed(images, config, backend, "user" if backend == "kvm" else None, None)
    assert result.status == 0, result.reason
    m = re.search(rb"ticks=(\d+)", out)
    assert m, out
    return wall, result.exits, int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default="kvm,soft")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    print(
        f"{'backend':<7} {'case':<15} {'source':<6} {'ticks':>6} {'exits':>7}"
        f" {'exits/tick':>10} {'ticks/s':>9}"
    )
    for backend in args.backends.split(","):
        for append, what in CASES:
            for src in SOURCES:
                try:
                    runs = [_once(backend, f"src={src} {append}") for _ in range(args.repeat)]
                except (BackendUnavailable, RrvmmError) as e:
                    print(f"{backend:<7} unavailable: {e}")
                    break
                wall, exits, ticks = min(runs)
                print(
                    f"{backend:<7} {what:<15} {src:<6} {ticks:>6} {exits:>7}"
                    f" {exits / max(ticks, 1):>10.2f} {ticks / wall:>9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
