"""Linux boot-to-shell wall time: rrvmm run and record (software backend) beside QEMU TCG
plain and QEMU's own record (-icount ...,rr=record), same kernel and initramfs, one run.

Each run starts the guest, waits for the busybox prompt on the serial console, then types
`exit` (the repo's /init reboots when the shell ends). Needs scripts/get-linux-guest.py.
Beside wall time it prints the CPU time each run used (user + system, whole run): on a
shared machine the wall-time ratio mostly measures the load, the CPU-time ratio the work.

    python bench/linux_boot.py
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("RRVMM_CACHE", Path.home() / ".cache" / "rrvmm")) / "linux"
APPEND = "console=ttyS0 earlyprintk=ttyS0 noapic nolapic nokaslr panic=-1 rdinit=/init"


def cpu_seconds() -> float:
    """User + system time of the finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def to_shell(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds to the shell prompt, seconds to the end, CPU seconds) for a command on a
    pipe."""
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    assert p.stdin and p.stdout
    buf = b""
    while b"/ # " not in buf:
        chunk = p.stdout.read1(4096)
        if not chunk:
            raise SystemExit(f"no shell prompt from {cmd[0]}: {buf[-300:]!r}")
        buf += chunk
    prompt = time.perf_counter() - t0
    p.stdin.write(b"exit\n")
    p.stdin.flush()
    try:
        p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
    return prompt, time.perf_counter() - t0, cpu_seconds() - cpu0


def main() -> None:
    vmlinuz, initrd = CACHE / "vmlinuz", CACHE / "initrd.img"
    if not vmlinuz.exists():
        raise SystemExit("run scripts/get-linux-guest.py first")
    rrvmm = [sys.executable, "-m", "rrvmm"]
    machine = ["--backend", "soft", "--memory", "256M", "--kernel", str(vmlinuz),
               "--initrd", str(initrd), "--append", APPEND]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("rrvmm run (soft)", [*rrvmm, "run", *machine]),
            ("rrvmm record (soft)", [*rrvmm, "record", *machine, "-o", f"{tmp}/l.rrt"]),
        ]
        qemu = shutil.which("qemu-system-x86_64")
        if qemu:
            base = [qemu, "-machine", "isapc", "-cpu", "qemu64", "-m", "256M", "-nographic",
                    "-monitor", "none", "-serial", "stdio", "-no-reboot", "-net", "none",
                    "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", APPEND]  # fmt: skip
            rows.append(("qemu TCG", base))
            rr = ["-icount", f"shift=5,rr=record,rrfile={tmp}/q.rr"]
            rows.append(("qemu TCG rr=record", [*base, *rr]))
        print(f"{'':22} {'to shell s':>10} {'total s':>8} {'CPU s':>8}")
        results, cpu = {}, {}
        for name, cmd in rows:
            prompt, total, used = to_shell(cmd)
            results[name], cpu[name] = prompt, used
            print(f"{name:22} {prompt:10.2f} {total:8.2f} {used:8.2f}")
        if "qemu TCG" in results:
            for what, table in (("wall to shell", results), ("CPU", cpu)):
                rec = table["rrvmm record (soft)"] / table["qemu TCG rr=record"]
                run = table["rrvmm run (soft)"] / table["qemu TCG"]
                print(f"{what}: rrvmm record / qemu rr=record {rec:.2f}x;"
                      f" rrvmm run / qemu TCG {run:.2f}x")  # fmt: skip
        trace = Path(tmp) / "l.rrt"
        if trace.exists():
            print(f"rrvmm trace: {trace.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
