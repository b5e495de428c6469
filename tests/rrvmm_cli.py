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


def _own_terminal() -> None:
    """In the child: a session of its own with the pty as controlling terminal."""
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


_STOP_SIGNALS = {"SIGINT": 2, "SIGTERM": 15, "SIGKILL": 9}


def stop_recording(
    *args: str,
    ready: bytes,
    keys: bytes,
    delay: float,
    how: str,
    timeout: float = 120,
) -> Completed:
    """Run rrvmm on a terminal (a pty: stdin and stdout), wait until the guest printed
    ``ready``, type ``keys``, wait ``delay`` seconds, then end it ``how``: 'SIGINT',
    'SIGTERM', 'SIGKILL' or 'ctrl-a-x' (typed). ``out`` is the terminal's text (CR LF
    lines), ``err`` stderr (a pipe)."""
    import pty
    import select
    import signal
    import time

    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", *args],
        stdin=slave, stdout=slave, stderr=subprocess.PIPE, preexec_fn=_own_terminal,
    )  # fmt: skip
    os.close(slave)
    out = bytearray()

    def pump(wait: float) -> bool:
        """Read what the terminal shows; False once the child closed it."""
        ready_fds, _, _ = select.select([master], [], [], wait)
        if not ready_fds:
            return True
        try:
            data = os.read(master, 65536)
        except OSError:
            return False
        out.extend(data)
        return bool(data)

    try:
        deadline = time.monotonic() + timeout
        while ready not in out and p.poll() is None and time.monotonic() < deadline:
            pump(0.05)
        if keys:
            os.write(master, keys)
        end = time.monotonic() + delay
        while time.monotonic() < end and pump(max(0.0, end - time.monotonic())):
            pass
        if how == "ctrl-a-x":
            os.write(master, b"\x01x")
        else:
            p.send_signal(signal.Signals(_STOP_SIGNALS[how]))
        while p.poll() is None and time.monotonic() < deadline and pump(0.05):
            pass
        assert p.stderr is not None
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
        while pump(0):
            pass
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr is not None:
            p.stderr.close()
        os.close(master)
    return Completed(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
