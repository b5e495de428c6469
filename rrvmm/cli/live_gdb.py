"""`rrvmm run --gdb` / `record --gdb`: serve the live guest to gdb from its first instruction.

As QEMU's ``-s -S``: the listening socket is opened before the guest boots (a bad address
or a busy port is an error at once), the guest waits before its first instruction until
gdb resumes it, and when gdb goes away (detach, quit) the guest runs on to its end. The
run's exit status is the guest's, as without gdb.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import cast

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.machine.pc import Machine, RunResult
from rrvmm.target import Target

__all__ = ["add_gdb_arg", "live_gdb_driver"]

DEFAULT_LIVE_GDB = ":1234"
_POLL_S = 0.25


def add_gdb_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gdb",
        nargs="?",
        const=DEFAULT_LIVE_GDB,
        metavar="[HOST:]PORT",
        help="stop before the first instruction and wait for gdb (`target remote :1234`) on"
        " [HOST:]PORT (default :1234 = 127.0.0.1:1234), as QEMU's -s -S; forwards only (going"
        " back needs the recording: rrvmm replay --gdb)",
    )


def live_gdb_driver(
    spec: str | None, *, recording: bool
) -> tuple[Callable[[Machine], RunResult] | None, Callable[[], None]]:
    """(drive, close): ``drive(machine)`` serves ``machine`` to gdb and returns the run's
    result; ``close`` releases the socket. (None, no-op) without ``--gdb``."""
    if spec is None:
        return None, lambda: None
    from rrvmm.gdbstub.server import GdbServer, listen_address
    from rrvmm.machine.live_target import LiveTarget

    try:
        host, port = listen_address(spec)
    except ValueError as e:
        raise RrvmmError(f"--gdb: {e}", ExitStatus.USAGE) from None
    try:
        # listening before the machine exists; its target is set once it is booted
        server = GdbServer(cast(Target, None), host, port)
    except OSError as e:
        raise RrvmmError(
            f"--gdb {spec}: cannot listen on {host}:{port}: {e.strerror}", ExitStatus.USAGE
        ) from None

    def drive(machine: Machine) -> RunResult:
        target = LiveTarget(machine, recording=recording)
        server.target = target
        h, p = server.address
        print(
            f"rrvmm: the guest waits before its first instruction for gdb on {h}:{p};"
            f" in gdb: target remote {h}:{p}",
            file=sys.stderr,
            flush=True,
        )
        while not server.serve_one(timeout=_POLL_S):  # Ctrl-A x still quits meanwhile
            if machine.seam.stop_requested():
                target.result = RunResult(
                    ExitStatus.INTERRUPTED, "stopped by the user (Ctrl-A x) before gdb came"
                )
                return target.finish()
        if target.result is None:
            print("rrvmm: gdb left; the guest runs on", file=sys.stderr, flush=True)
            return target.run_to_end()
        return target.finish()

    return drive, server.close
