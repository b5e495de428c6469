"""The issue's case: a Linux recording ended with Ctrl-A x right after the guest got a
Ctrl-C. It did not replay ("expected no injection, got vector 0x30": a halted guest's
timer was taken and logged, then the stop came before its interrupt was injected). Now
the stop ends the trace where replay stops too.

Needs the Linux guest from scripts/get-linux-guest.py (skips without it, as the others).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_linux_guest import APPEND, INITRD, MACHINE, VMLINUZ

from rrvmm_cli import rrvmm, stop_recording

pytestmark = pytest.mark.skipif(
    not (VMLINUZ.exists() and INITRD.exists()), reason="no Linux guest: scripts/get-linux-guest.py"
)


def test_ctrl_a_x_right_after_a_ctrl_c_replays(tmp_path: Path) -> None:
    # one try (~7 min here); tests/replay/test_signals.py puts the stop at the exact moment
    trace = tmp_path / "linux.rrt"
    rec = stop_recording(
        "record", *MACHINE, "--append", APPEND, "-o", str(trace),
        ready=b"/ # ", keys=b"sleep 5\r\x03", delay=random.uniform(0.0, 0.3), how="ctrl-a-x",
        timeout=600,
    )  # fmt: skip
    assert rec.status == 130, rec.err
    assert "stopped by the user (Ctrl-A x)" in rec.err
    rep = rrvmm("replay", str(trace), stdin=None, timeout=600)
    assert rep.status == 0, rep.err
    assert "replay matched all" in rep.err
