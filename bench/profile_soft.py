"""Where a software-CPU Linux boot spends its time: native unicorn, Python, recorder.

Boots the Linux guest (scripts/get-linux-guest.py) to the shell under ``py-spy record
--native``, types ``exit``, and splits the main thread's samples:

- guest code: inside ``uc_emu_start`` with no Python frame below it, itself split into
  count-mode overhead (EFLAGS synced before each instruction's counting hook, the hook, the
  exit-request checks), the store slow path (``notdirty_write`` and the softmmu store
  helpers), translation, and the rest (mostly translated code);
- Python hooks: Python callbacks unicorn makes from inside ``uc_emu_start`` (IN/OUT,
  exceptions, CPUID, RDTSC...);
- recorder: frames of ``rrvmm/replay/`` (event logging, landing fingerprints) when recording;
- Python: the run loop outside ``uc_emu_start``, devices, seam, everything else.

    pip install py-spy
    python bench/profile_soft.py [--mode run|record] [--rate 200] [--top 15]

py-spy needs ptrace rights over its child (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE = Path(os.environ.get("RRVMM_CACHE", Path.home() / ".cache" / "rrvmm")) / "linux"
APPEND = "console=ttyS0 earlyprintk=ttyS0 noapic nolapic nokaslr panic=-1 rdinit=/init"
PROMPT = b"/ # "
TIMEOUT_S = 900

# leaf symbols (unicorn 2.1.4, x86_64 target) by what they cost
COUNT_MODE = ("helper_cc_compute_all", "helper_read_eflags", "cpu_cc_compute_all",
              "helper_check_exit_request", "hook_count_cb")  # fmt: skip
STORE_SLOW = ("notdirty_write",)
STORE_HELPERS = ("_st", "stb_mmu", "stw_mmu", "stl_mmu", "stq_mmu")
TRANSLATION = ("tb_gen_code",)


def is_python(frame: str) -> bool:
    """py-spy names Python frames ``func (file.py:line)``, native ones ``sym (lib)``."""
    return ".py:" in frame or "<frozen" in frame


def classify(frames: list[str]) -> str | None:
    """The bucket of one main-thread stack (root first); None for other threads."""
    if any(f.startswith("Thread._bootstrap ") for f in frames):
        return None  # a helper thread (the serial reader waits in read())
    if any("rrvmm/replay/" in f for f in frames):
        return "recorder"
    if any("rrvmm/soft/hooks.py" in f for f in frames):
        return "python hooks"  # py-spy may not unwind through translated code to Engine.start
    starts = [i for i, f in enumerate(frames) if f.startswith("Engine.start ")]
    if not starts:
        return "python"
    below = frames[starts[-1] + 1 :]
    if any(is_python(f) for f in below):
        return "python hooks"
    names = [f.split(" (")[0] for f in below]
    leaf = names[-1] if names else ""
    if any(leaf.startswith(s) for s in COUNT_MODE):
        return "guest: count-mode overhead"
    if any(any(s in n for s in STORE_SLOW) for n in names):
        return "guest: store slow path"
    if any(n.startswith(TRANSLATION) for n in names):
        return "guest: translation"
    if any(s in leaf for s in STORE_HELPERS) and "helper" in leaf:
        return "guest: store slow path"
    return "guest: other (translated code, TLB, helpers)"


def summarise(profile: Path, top: int) -> None:
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        bucket = classify(frames)
        if bucket is None:
            continue
        buckets[bucket] += int(count)
        leaves[frames[-1].split(" (")[0]] += int(count)
    total = sum(buckets.values())
    if not total:
        raise SystemExit("the profile holds no samples of the main thread")
    print(f"{total} samples of the main thread")
    guest = sum(n for b, n in buckets.items() if b.startswith("guest"))
    print(f"{'native (inside uc_emu_start)':46} {100 * guest / total:5.1f}%")
    for name, n in sorted(buckets.items()):
        print(f"  {name:44} {100 * n / total:5.1f}%")
    print(f"top {top} leaf functions:")
    for name, n in leaves.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def boot_under_pyspy(mode: str, rate: int, out: Path, tmp: str) -> float:
    """Run the boot to the shell under py-spy; wall seconds to the prompt."""
    vmlinuz, initrd = CACHE / "vmlinuz", CACHE / "initrd.img"
    cmd = [
        "py-spy", "record", "--native", "--rate", str(rate), "--format", "raw",
        "--output", str(out), "--", sys.executable, "-m", "rrvmm", mode, "--backend", "soft",
        "--memory", "256M", "--kernel", str(vmlinuz), "--initrd", str(initrd), "--append", APPEND,
    ]  # fmt: skip
    if mode == "record":
        cmd += ["-o", f"{tmp}/boot.rrt"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    assert p.stdin and p.stdout
    timer = threading.Timer(TIMEOUT_S, p.kill)
    timer.start()
    try:
        buf = b""
        while PROMPT not in buf:
            chunk = p.stdout.read1(4096)
            if not chunk:
                raise SystemExit(f"no shell prompt: {buf[-300:]!r}")
            buf += chunk
        prompt = time.perf_counter() - t0
        p.stdin.write(b"exit\n")
        p.stdin.flush()
        p.communicate()
    finally:
        timer.cancel()
    return prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("run", "record"), default="run")
    ap.add_argument("--rate", type=int, default=200, help="samples per second")
    ap.add_argument("--top", type=int, default=15, help="leaf functions to list")
    ap.add_argument("--profile", type=Path, help="summarise this py-spy raw profile instead")
    args = ap.parse_args()
    if args.profile is not None:
        summarise(args.profile, args.top)
        return
    if not (CACHE / "vmlinuz").exists():
        raise SystemExit("run scripts/get-linux-guest.py first")
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        prompt = boot_under_pyspy(args.mode, args.rate, out, tmp)
        print(f"rrvmm {args.mode} (soft) under py-spy: {prompt:.1f} s to the shell prompt")
        summarise(out, args.top)


if __name__ == "__main__":
    main()
