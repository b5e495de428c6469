"""The software backend's speed beside KVM's, on the same compute guest, in one run.

Runs guests/build/compute.mb (an integer hash loop, 14 instructions per iteration) on
both backends and prints MIPS (instructions per second of wall time; the software backend
counts them exactly, KVM's figure uses the same count) and the ratio.

    python bench/backends.py [--n 2000000]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rrvmm.host.terminal import SerialHost  # noqa: E402
from rrvmm.launch import run_guest  # noqa: E402
from rrvmm.machine.cpu_choice import make_backend  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402

MEMORY = 32 << 20


def run(backend: str, n: int) -> tuple[float, int | None, bytes]:
    images = GuestImages.load(REPO / "guests" / "build" / "compute.mb")
    config = MachineConfig(memory=MEMORY, cmdline=f"n={n}", kernel_name="compute.mb")
    cpu = make_backend(backend, MEMORY)
    out = io.BytesIO()
    t0 = time.perf_counter()
    result = run_guest(images, config, cpu, SerialHost(output=out, input_fd=None))
    dt = time.perf_counter() - t0
    count = getattr(cpu, "instructions", None)
    cpu.close()
    assert result.status == 0, result.reason
    return dt, count, out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="loop iterations")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    t_soft, count, out_soft = run("soft", args.n)
    t_kvm, _, out_kvm = run("kvm", args.n)
    assert out_soft == out_kvm, "the backends computed different results"
    assert count is not None
    print(f"compute.mb n={args.n:,}: {count:,} instructions (counted by the software CPU)")
    print(f"soft : {t_soft:8.2f} s  {count / t_soft / 1e6:8.1f} MIPS")
    print(f"kvm  : {t_kvm:8.2f} s  {count / t_kvm / 1e6:8.1f} MIPS")
    print(f"soft / kvm wall time: {t_soft / t_kvm:.3f}x (below 1: the software CPU is faster"
          " here, where KVM runs guests in its instruction emulator)")  # fmt: skip


if __name__ == "__main__":
    main()
