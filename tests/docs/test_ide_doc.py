"""docs/ide.md's gdb session runs as written against a real replay."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gdb_driver import ReplayServer
from rrvmm_cli import rrvmm

DOC = Path(__file__).resolve().parents[2] / "docs" / "ide.md"


def _gdb_block() -> list[str]:
    m = re.search(r"```gdb\n(.*?)```", DOC.read_text(), re.S)
    assert m, "docs/ide.md has no gdb block"
    return m.group(1).strip().splitlines()


def test_the_documented_gdb_session(tmp_path: Path, guest_dir: Path, any_backend: str) -> None:
    trace = tmp_path / "corrupt.rrt"
    r = rrvmm("record", "--backend", any_backend, "--kernel", str(guest_dir / "corrupt.mb"),
              "-o", str(trace), stdin=None)  # fmt: skip
    assert r.status == 3, r.err
    server = ReplayServer(trace)
    commands = [c.replace(":1234", f"127.0.0.1:{server.port}") for c in _gdb_block()]
    script = tmp_path / "session.gdb"
    script.write_text("set pagination off\nset confirm off\n" + "\n".join(commands) + "\n")
    try:
        out = subprocess.run(
            ["gdb", "-nx", "-q", "-batch", "-x", str(script), str(guest_dir / "corrupt.elf")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.close()
    text = out.stdout + out.stderr
    assert "Breakpoint 1, panic" in text
    assert "Old value = 108" in text and "New value = 1611526157" in text
    assert re.search(r"in buggy_store \(idx=idx@entry=8", text)
    assert "<buggy_store+2>" in text  # x/i $pc: the store itself
    assert "position: exit" in text  # monitor info
    assert "No more reverse-execution history" in text  # continue to the end
    assert re.search(r"cr3\s+0x", text)
