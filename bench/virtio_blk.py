"""virtio-blk read throughput: plain run vs record, side by side in one run.

The virtio test guest reads a whole disk image (4 KiB per request) with ``blkreadall``;
MB/s = image size / wall time of the whole run (boot included, which is ~ms).

    python bench/virtio_blk.py [--mib 32] [--repeat 3] [--backend kvm|soft]
"""

from __future__ import annotations

import argparse
import os
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


def _once(backend: str, disk: Path, trace: Path | None) -> float:
    kernel = REPO / "guests" / "build" / "virtio.mb"
    images = GuestImages.load(kernel)
    config = MachineConfig(
        memory=MEMORY, cmdline="blkreadall", kernel_name=kernel.name, virtio_cmdline=True,
        disk=str(disk),
    )  # fmt: skip
    wall, result, out = timed(images, config, backend, None, trace)
    assert result.status == 0 and b"virtio-blk: read" in out, out
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="kvm")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(os.urandom(args.mib << 20))
        run = min(_once(args.backend, disk, None) for _ in range(args.repeat))
        rec = min(_once(args.backend, disk, Path(tmp) / f"t{i}.rrt") for i in range(args.repeat))
        trace_bytes = (Path(tmp) / "t0.rrt").stat().st_size
    mib = args.mib
    print(f"backend {args.backend}, {mib} MiB read in 4 KiB requests")
    print(f"  run     {run:7.3f} s  {mib / run:7.1f} MiB/s")
    print(f"  record  {rec:7.3f} s  {mib / rec:7.1f} MiB/s   record/run {rec / run:.2f}x,"
          f" trace {trace_bytes / 1024:.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
