"""`rrvmm hunt` with the Debian kernel and a shell command as the workload (`rrvmm.run=`).

The command prints the guest's clock in seconds (from the RTC, which reads the host's
wall clock: different in every run), and the hunt looks for an odd one: about half the
runs match. (Not /dev/urandom: in Linux 6.1 it waits minutes for the entropy pool here.)
Two runs at most, one at a time (a boot takes about a minute on the software CPU).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from hunt_procs import REPO
from rrvmm_cli import rrvmm

CACHE = Path(os.environ.get("RRVMM_CACHE", Path.home() / ".cache" / "rrvmm")) / "linux"
VMLINUZ, INITRD = CACHE / "vmlinuz", CACHE / "initrd.img"
APPEND = (
    "console=ttyS0 earlyprintk=ttyS0 noapic nolapic nokaslr panic=-1 rdinit=/init quiet"
    ' rrvmm.shell=0 rrvmm.run="echo coin-$(date +%s)"'
)
ODD = r"coin-\d*[13579]\b"

pytestmark = pytest.mark.skipif(
    not (VMLINUZ.exists() and INITRD.exists()),
    reason=f"no Linux guest in {CACHE}: run scripts/get-linux-guest.py first",
)


def _serial_output(trace: Path) -> str:
    """What the guest wrote to COM1, from the trace's recorded port writes."""
    dump = rrvmm("trace", "dump", "--json", str(trace), timeout=120)
    assert dump.status == 0, dump.err
    out = bytearray()
    for line in dump.out.splitlines():
        ev = json.loads(line)
        if ev.get("exit_kind") == "IO_OUT" and ev["addr"] == 0x3F8:
            out.append(ev["value"] & 0xFF)
    return out.decode(errors="replace")


def test_hunt_a_linux_workload_until_a_regex(tmp_path: Path) -> None:
    kept_dir = tmp_path / "kept"
    h = rrvmm(
        "hunt", "--until", f"regex:{ODD}", "--runs", "2", "-j", "1", "--json",
        "-o", str(kept_dir), "--timeout", "900", "--",
        "--backend", "soft", "--memory", "256M", "--kernel", str(VMLINUZ),
        "--initrd", str(INITRD), "--append", APPEND,
        stdin=None, timeout=1900, cwd=str(tmp_path), env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert h.status in (0, 1), h.err
    summary = json.loads(h.out)
    assert summary["timeouts"] == 0
    kept = [Path(k["path"]) for k in summary["kept"]]
    assert (h.status == 0) == bool(kept) and summary["failures"] == len(kept)
    if kept:  # it stopped at the first match
        assert summary["runs"] == summary["kept"][0]["run"] + 1
    else:
        assert summary["runs"] == 2
    # only the matching traces stay, and each holds a matching run
    assert sorted(kept_dir.iterdir()) == sorted(kept)
    for trace in kept:
        info = json.loads(rrvmm("trace", "info", "--json", str(trace)).out)
        assert info["packed"] and info["complete"] and "initrd" in info["carries"]
        serial = _serial_output(trace)
        assert "rrvmm-linux: run exited 0" in serial
        assert re.search(ODD, serial), serial[-300:]
