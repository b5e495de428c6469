"""Running the real `rrvmm` command from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Completed:
    status: int
    out: str
    err: str


def rrvmm(
    *args: str,
    stdin: bytes | None = b"",
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: str | None = None,
) -> Completed:
    """`python -m rrvmm ARGS`; stdin is a pipe with these bytes (None: /dev/null)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(
        [sys.executable, "-m", "rrvmm", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return Completed(
        p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    )
