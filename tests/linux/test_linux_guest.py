"""A stock Debian kernel (6.1, cloud) with the repo's busybox initramfs, on the software
backend: boot to a shell, type commands, record, replay; a panic, debugged with gdb. Each
on both PCs: the 8259-only one (`noapic nolapic`) and the modern one (`--apic on`, the
kernel's own choice: LAPIC timer ticks, interrupts through the I/O APIC).

The kernel comes from scripts/get-linux-guest.py (CI runs it; it needs the Debian package
mirror). Where it has not been fetched, these tests skip and say so.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gdb_driver import gdb_on_replay
from rrvmm_cli import rrvmm, rrvmm_after

CACHE = Path(os.environ.get("RRVMM_CACHE", Path.home() / ".cache" / "rrvmm")) / "linux"
VMLINUZ, INITRD, SYSTEM_MAP = CACHE / "vmlinuz", CACHE / "initrd.img", CACHE / "System.map"
BASE_APPEND = "console=ttyS0 earlyprintk=ttyS0 nokaslr panic=-1 rdinit=/init"
BASE_MACHINE = ["--backend", "soft", "--memory", "256M", "--kernel", str(VMLINUZ),
                "--initrd", str(INITRD)]  # fmt: skip
# the PIC-only PC needs the kernel told so; the modern PC needs nothing
PCS = {
    "pic": (BASE_MACHINE, f"{BASE_APPEND} noapic nolapic"),
    "apic": ([*BASE_MACHINE, "--apic", "on"], BASE_APPEND),
}
MACHINE, APPEND = PCS["pic"]

pytestmark = pytest.mark.skipif(
    not (VMLINUZ.exists() and INITRD.exists()),
    reason=f"no Linux guest in {CACHE}: run scripts/get-linux-guest.py --dbg first",
)


def _symbol(name: str) -> int:
    for line in SYSTEM_MAP.read_text().splitlines():
        addr, _kind, sym = line.split()[:3]
        if sym == name:
            return int(addr, 16)
    raise KeyError(name)


def _record_and_replay(tmp_path: Path, i: int, pc: str = "pic") -> None:
    machine, append = PCS[pc]
    trace = tmp_path / f"linux{i}.rrt"
    rec = rrvmm_after(
        "record", *machine, "--append", append, "-o", str(trace),
        wait_for=b"/ # ", send=b"echo typed-$((6*7))\nuname -r\ncat /proc/interrupts\nexit\n",
        timeout=300,
    )  # fmt: skip
    assert rec.status == 0, rec.err  # /init reboots when the shell exits
    assert "Run /init as init process" in rec.out and "typed-42" in rec.out
    assert "6.1.0" in rec.out.split("uname -r", 1)[1]
    interrupts = rec.out.split("cat /proc/interrupts", 1)[1]
    loc = re.search(r"LOC:\s+(\d+)", interrupts)
    if pc == "apic":  # the LAPIC timer ticks; the devices go through the I/O APIC
        assert loc is not None and int(loc.group(1)) > 0, interrupts
        assert re.search(r"IO-APIC\s+2-edge\s+timer", interrupts), interrupts
        assert re.search(r"IO-APIC\s+4-edge\s+ttyS0", interrupts), interrupts
    else:
        assert loc is None or int(loc.group(1)) == 0, interrupts
    rep = rrvmm("replay", str(trace), stdin=None, timeout=300)
    assert rep.status == 0, f"recording {i}: {rep.err}"
    assert rep.out == rec.out, f"recording {i}: replay printed something else"


@pytest.mark.parametrize("pc", list(PCS))
def test_boot_to_a_shell_record_and_replay_10_of_10(tmp_path: Path, pc: str) -> None:
    # two at a time: each rrvmm keeps one core busy, and CI machines have two
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(_record_and_replay, tmp_path, i, pc) for i in range(10)]:
            done.result()


@pytest.mark.skipif(not SYSTEM_MAP.exists(), reason="System.map comes with get-linux-guest --dbg")
@pytest.mark.parametrize("pc", list(PCS))
def test_panic_replays_and_gdb_goes_back_from_it(tmp_path: Path, pc: str) -> None:
    machine, append = PCS[pc]
    trace = tmp_path / "panic.rrt"
    crash = 'rrvmm.shell=0 rrvmm.run="echo c > /proc/sysrq-trigger"'
    rec = rrvmm("record", *machine, "--append", f"{append} {crash}", "-o", str(trace),
                stdin=None, timeout=300)  # fmt: skip
    assert "Kernel panic - not syncing: sysrq triggered crash" in rec.out, rec.err
    rep = rrvmm("replay", str(trace), stdin=None, timeout=300)
    assert rep.status == 0 and rep.out == rec.out, rep.err

    panic, handler = _symbol("panic"), _symbol("sysrq_handle_crash")
    arch = ("set architecture i386:x86-64",)
    with gdb_on_replay(trace, None, "--checkpoint-every", "2000", before=arch) as g:
        g.cmd(f"break *{panic:#x}")
        stop = g.run("continue", timeout=240)
        assert int(stop["frame"]["addr"], 16) == panic
        g.run("reverse-stepi", timeout=120)
        pc = g.pc()
        assert handler <= pc < panic and pc != panic  # the call in sysrq_handle_crash
        g.cmd("delete")
        g.cmd(f"break *{handler:#x}")
        stop = g.run("reverse-continue", timeout=240)
        assert int(stop["frame"]["addr"], 16) == handler
        regs = g.cmd("info registers rip cs")
        assert re.search(r"cs\s+0x10", regs)
