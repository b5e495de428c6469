"""Running the real `rrvmm` command from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
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


def rrvmm_after(
    *args: str,
    wait_for: bytes,
    send: bytes,
    timeout: float = 60,
    between: Callable[[], None] | None = None,
) -> Completed:
    """Run rrvmm and type ``send`` only once the guest printed ``wait_for``, as a person
    would (guests that self-test their UART discard input that arrives during the test);
    ``between`` runs after the wait, before typing (e.g. talk to the guest's network)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin is not None and p.stdout is not None
    out = b""
    while wait_for not in out:
        chunk = p.stdout.read1(4096)
        if not chunk:
            break
        out += chunk
    try:
        if between is not None:
            try:
                between()
            except BaseException:
                p.kill()
                p.communicate()
                raise
        p.stdin.write(send)
        p.stdin.close()
    except BrokenPipeError:
        pass
    p.stdin = None  # closed above; communicate() must not flush it
    rest, err = p.communicate(timeout=timeout)
    return Completed(
        p.returncode, (out + rest).decode(errors="replace"), err.decode(errors="replace")
    )
