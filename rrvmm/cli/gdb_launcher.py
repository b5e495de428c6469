"""`rrvmm replay --gdb`: start gdb in this terminal, attached to the replay, as `rr replay`.

The replay is served on a free loopback port by a thread of this process; gdb runs as a
child in the foreground with the guest's symbols (``rrvmm.replay.symbol_files``) and a
small script: it keeps breakpoints inserted (so ``monitor info`` lists them), refuses
memory writes up front (a replay is read-only), and defines ``goto N`` (``monitor goto N``
plus the register-cache flush gdb needs to see the new position). Ctrl-C belongs to gdb
(it interrupts the replay over the wire); this process ignores it until gdb exits.
Without a gdb on $PATH (or $RRVMM_GDB), the replay is served on 127.0.0.1:1234 instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["replay_with_gdb", "gdb_script", "find_gdb"]

_GDB_SCRIPT = """\
set breakpoint always-inserted on
set may-write-memory off
define goto
  monitor goto $arg0
  maintenance flush register-cache
  frame
end
document goto
Go to just after exit N of the recording (monitor goto N), and show where that is.
end
target remote {host}:{port}
"""


def find_gdb() -> str | None:
    """$RRVMM_GDB, else gdb on $PATH; None if there is none."""
    return shutil.which(os.environ.get("RRVMM_GDB") or "gdb")


def gdb_script(host: str, port: int) -> str:
    return _GDB_SCRIPT.format(host=host, port=port)


def replay_with_gdb(
    args: argparse.Namespace, make_engine: Callable[[argparse.Namespace, Any], Any]
) -> int:
    """Replay ``args.trace`` under a gdb started here; 0, or gdb's own failure status."""
    from rrvmm.gdbstub.server import GdbServer
    from rrvmm.replay.container import open_trace
    from rrvmm.replay.symbol_files import find_symbol_file

    gdb = find_gdb()
    if gdb is None:
        from rrvmm.cli.replay import _replay_gdb

        print(
            "rrvmm: no gdb found (install it, or set RRVMM_GDB); serving the replay instead",
            file=sys.stderr,
        )
        args.gdb = ":1234"
        return _replay_gdb(args)
    if args.symbols is not None and not Path(args.symbols).is_file():
        raise RrvmmError(f"--symbols {args.symbols}: no such file", ExitStatus.NO_INPUT)
    with open_trace(args.trace) as reader, tempfile.TemporaryDirectory(prefix="rrvmm-gdb-") as d:
        scratch = Path(d)
        symbols = Path(args.symbols) if args.symbols else find_symbol_file(reader, scratch)
        engine = make_engine(args, reader)
        try:
            with GdbServer(engine, "127.0.0.1", 0) as server:
                host, port = server.address
                script = scratch / "rrvmm.gdb"
                script.write_text(gdb_script(host, port))
                where = f"symbols from {symbols}" if symbols else "no symbols (give --symbols ELF)"
                print(
                    f"rrvmm: replaying {args.trace} ({engine.total_exits} exits) in gdb, {where};"
                    " reverse-stepi/reverse-continue go back, `monitor help` lists rrvmm's"
                    " commands, `goto N` jumps to exit N",
                    file=sys.stderr,
                    flush=True,
                )
                serving = threading.Thread(
                    target=server.serve_one, name="rrvmm-gdb-serve", daemon=True
                )
                serving.start()
                status = _run_gdb(
                    [gdb, "-q", "-x", str(script), *([str(symbols)] if symbols else [])]
                )
                server.shutdown()
                serving.join(timeout=30)
        finally:
            engine.close()
    return 0 if status == 0 else status


def _run_gdb(command: list[str]) -> int:
    """Run gdb in the foreground; Ctrl-C is gdb's (a handler, not SIG_IGN, so the child
    starts with the default disposition)."""
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        try:
            return subprocess.call(command)
        except OSError as e:
            raise RrvmmError(
                f"cannot start {command[0]}: {e.strerror}", ExitStatus.NO_INPUT
            ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
