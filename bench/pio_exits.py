"""PIO exits per second: rrvmm's Python exit loop beside a minimal C KVM loop.

Both run the same guest image (guests/build/pio.mb, laid out by rrvmm's own multiboot
loader) in one run, side by side, and the ratio is printed. The C loop is built here with
gcc from bench/kvm_loop.c.

    python bench/pio_exits.py [--n 100000]
"""

from __future__ import annotations

import argparse
import io
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rrvmm.host.terminal import SerialHost  # noqa: E402
from rrvmm.launch import run_guest  # noqa: E402
from rrvmm.machine.boot.multiboot import load_multiboot  # noqa: E402
from rrvmm.machine.cpu_choice import make_backend  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402

MEMORY = 16 << 20


def build_c_loop(workdir: Path) -> Path:
    exe = workdir / "kvm_loop"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(REPO / "bench" / "kvm_loop.c")], check=True)
    return exe


def write_image(kernel: bytes, cmdline: str, path: Path) -> None:
    img, blobs = load_multiboot(kernel, MEMORY, cmdline)
    with path.open("wb") as f:
        f.write(struct.pack("<4Q", MEMORY, img.entry, img.regs["rax"], img.regs["rbx"]))
        for gpa, body in [*img.segments, *((g, bytes(n)) for g, n in img.zero), *blobs]:
            f.write(struct.pack("<2Q", gpa, len(body)))
            f.write(body)


def run_rrvmm(kernel_path: Path, cmdline: str) -> tuple[int, float]:
    images = GuestImages.load(kernel_path)
    config = MachineConfig(memory=MEMORY, cmdline=cmdline, kernel_name="pio.mb")
    cpu = make_backend("kvm", MEMORY)
    try:
        t0 = time.perf_counter()
        result = run_guest(images, config, cpu, SerialHost(output=io.BytesIO(), input_fd=None))
        dt = time.perf_counter() - t0
    finally:
        cpu.close()
    if result.status != 0:
        raise SystemExit(f"rrvmm run failed: {result.reason}")
    return result.exits, dt


def run_c(exe: Path, image: Path) -> tuple[int, float]:
    p = subprocess.run([str(exe), str(image)], capture_output=True, text=True, check=True)
    m = re.search(r"exits=(\d+) seconds=([\d.]+)", p.stderr)
    assert m, p.stderr
    return int(m.group(1)), float(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="OUT instructions in the guest")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    kernel_path = REPO / "guests" / "build" / "pio.mb"
    cmdline = f"n={args.n}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = build_c_loop(work)
        image = work / "pio.img"
        write_image(kernel_path.read_bytes(), cmdline, image)
        best_py = best_c = 0.0
        for _ in range(args.repeat):
            exits_c, t_c = run_c(exe, image)
            exits_py, t_py = run_rrvmm(kernel_path, cmdline)
            best_c = max(best_c, exits_c / t_c)
            best_py = max(best_py, exits_py / t_py)
    print(f"guest: pio.mb n={args.n} ({exits_py} exits under rrvmm, {exits_c} in the C loop)")
    print(f"C KVM loop      : {best_c:12,.0f} PIO exits/s  ({1e6 / best_c:.2f} us/exit)")
    print(f"rrvmm (Python)  : {best_py:12,.0f} PIO exits/s  ({1e6 / best_py:.2f} us/exit)")
    print(f"ratio rrvmm / C : {best_py / best_c:.2f}x the C loop's rate")


if __name__ == "__main__":
    main()
