"""`rrvmm replay`: re-execute a trace and check it, or serve it to gdb or the console."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from rrvmm.cli.options import kvm_device_path
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.store import resolve

if TYPE_CHECKING:
    from rrvmm.replay.container import TraceReader
    from rrvmm.replay.engine import ReplayEngine

__all__ = ["add_parser", "LAUNCH_GDB"]

LAUNCH_GDB = "launch"  # `--gdb` without an address: start gdb here


def add_parser(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser(
        "replay",
        help="replay a trace and check it exit by exit",
        description="Re-execute a recording on the CPU and check every VM exit against it;"
        " the guest's serial output is printed again. With --gdb, start gdb on the replay"
        " (forwards and backwards); with --console, the replay console. Exit status 0 when"
        " everything matched, 72 on a divergence, 73 for a damaged or cut trace.",
    )
    rep.add_argument(
        "trace",
        nargs="?",
        help="trace file, or a name in the trace store (`rrvmm ls`); default: the latest recording",
    )
    rep.add_argument("--kernel", help="the kernel image, if not at the recorded path")
    rep.add_argument("--initrd", help="the initrd image, if not at the recorded path")
    rep.add_argument("--disk", help="the disk image, if not at the recorded path")
    rep.add_argument(
        "--backend",
        choices=("kvm", "soft", "auto"),
        default=None,
        help="CPU backend to replay on (default: the one the trace was recorded on)",
    )
    rep.add_argument(
        "--irqchip",
        choices=("user", "kernel"),
        default=None,
        help="must be the trace's own (a trace replays with the interrupt controller it was"
        " recorded with)",
    )
    rep.add_argument(
        "--gdb",
        nargs="?",
        const=LAUNCH_GDB,
        metavar="[HOST:]PORT",
        help="debug the replay with gdb instead of running it: alone, start gdb here attached"
        " to it (with the kernel's symbols); with [HOST:]PORT (:1234 = 127.0.0.1:1234), only"
        " serve it for a gdb started elsewhere",
    )
    rep.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="with --gdb or --console: take a checkpoint every N exits while replaying"
        " (default: by replay work, every 0.25 s, denser near where you are)",
    )
    rep.add_argument(
        "--checkpoint-memory",
        type=int,
        default=None,
        metavar="MIB",
        help="with --gdb or --console: the memory checkpoints may hold beyond the first"
        " image, in MiB (default 512); the ones far from the position are thinned out first",
    )
    rep.add_argument(
        "--console",
        action="store_true",
        help="open the interactive replay console (step, go back, break, watch) instead of"
        " running the replay",
    )
    rep.add_argument(
        "--symbols",
        metavar="ELF",
        help="with --console or --gdb: the guest's symbols (default: the symbols the packed"
        " trace carries, else the recorded kernel if it is an ELF)",
    )
    rep.set_defaults(func=_cmd_replay)


def _is_listen_address(text: str) -> bool:
    return text.isdigit() or ":" in text or text.startswith("[")


def _cmd_replay(args: argparse.Namespace) -> int:
    from rrvmm.launch import replay_trace
    from rrvmm.replay.container import open_trace

    if args.gdb not in (None, LAUNCH_GDB) and args.trace is None:
        if not _is_listen_address(args.gdb):  # `replay --gdb NAME`: NAME is the trace
            args.trace, args.gdb = args.gdb, LAUNCH_GDB
    args.trace = str(resolve(args.trace))
    for option, value in (
        ("--checkpoint-every", args.checkpoint_every),
        ("--checkpoint-memory", args.checkpoint_memory),
    ):
        if value is not None and value < 1:
            raise RrvmmError(f"{option} must be at least 1 (got {value})", ExitStatus.USAGE)
    if args.irqchip is not None:
        with open_trace(args.trace) as reader:
            recorded = reader.header.get("machine", {}).get("irqchip", "user")
        if recorded != args.irqchip:
            raise RrvmmError(
                f"--irqchip {args.irqchip}: this trace was recorded with --irqchip {recorded},"
                " and replays with it only",
                ExitStatus.USAGE,
            )
    if args.console:
        return _replay_console(args)
    if args.gdb == LAUNCH_GDB:
        from rrvmm.cli.gdb_launcher import replay_with_gdb

        return replay_with_gdb(args, _replay_engine)
    if args.symbols is not None:
        raise RrvmmError(
            "--symbols goes with --console or --gdb (the gdb rrvmm starts, without an address)",
            ExitStatus.USAGE,
        )
    if args.gdb is not None:
        return _replay_gdb(args)
    from rrvmm.cli.options import stdin_fd
    from rrvmm.host.replay_terminal import replay_terminal

    with open_trace(args.trace) as reader, replay_terminal(stdin_fd(), _stdout_fd()):
        total = reader.footer.get("exits") if reader.footer else None
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
        progress = _progress_printer(total) if interactive else None
        outcome = replay_trace(
            reader,
            kernel=args.kernel,
            initrd=args.initrd,
            output=sys.stdout.buffer,
            progress=progress,
            kvm_device=kvm_device_path(),
            backend=args.backend,
            disk=args.disk,
        )
        if progress is not None:
            print("\r\033[K", end="", file=sys.stderr)
        truncated = reader.truncated
        recorded_end = (reader.footer or {}).get("reason")
    if outcome.divergence is not None:
        print(f"rrvmm: {outcome.divergence.report()}", file=sys.stderr)
        return ExitStatus.DIVERGED
    if truncated:
        print(
            f"rrvmm: trace {args.trace} was cut after exit {outcome.exits} (the recording"
            " did not finish); everything up to there replayed exactly",
            file=sys.stderr,
        )
        return ExitStatus.BAD_TRACE
    if not outcome.matched:
        print(
            f"rrvmm: replay ended at exit {outcome.exits} before the recording did",
            file=sys.stderr,
        )
        return ExitStatus.DIVERGED
    if args.verbose:
        st = outcome.replayer.stats
        print(
            f"rrvmm: {st.landings} landings, {st.landing_hits} breakpoint hits,"
            f" {st.forged} without guest progress",
            file=sys.stderr,
        )
    reason = outcome.result.reason if outcome.result else "end of trace"
    if reason == "end of trace" and isinstance(recorded_end, str):
        reason = f"end of trace: {recorded_end}"  # e.g. stopped by the user (SIGINT)
    print(f"rrvmm: replay matched all {outcome.exits} exits ({reason})", file=sys.stderr)
    return 0


def _replay_engine(args: argparse.Namespace, reader: TraceReader) -> ReplayEngine:
    """The debugger's replay (console and gdb), with the replay options they share."""
    from rrvmm.replay.engine import ReplayEngine

    return ReplayEngine(
        reader,
        kernel=args.kernel,
        initrd=args.initrd,
        checkpoint_every=args.checkpoint_every,
        checkpoint_memory=None if args.checkpoint_memory is None else args.checkpoint_memory << 20,
        kvm_device=kvm_device_path(),
        backend=args.backend,
        disk=args.disk,
    )


def _replay_console(args: argparse.Namespace) -> int:
    from rrvmm.console import run_console
    from rrvmm.console.app import load_symbols
    from rrvmm.replay.container import open_trace

    if args.gdb is not None:
        raise RrvmmError("--console and --gdb: choose one", ExitStatus.USAGE)
    if args.symbols is not None:
        load_symbols(args.symbols)  # a bad --symbols fails before the replay starts
    with open_trace(args.trace) as reader:
        engine = _replay_engine(args, reader)
        try:
            return run_console(engine, args.symbols)
        finally:
            engine.close()


def _replay_gdb(args: argparse.Namespace) -> int:
    from rrvmm.gdbstub.server import GdbServer, listen_address
    from rrvmm.replay.container import open_trace

    try:
        host, port = listen_address(args.gdb)
    except ValueError as e:
        raise RrvmmError(f"--gdb: {e}", ExitStatus.USAGE) from None
    with open_trace(args.trace) as reader:
        engine = _replay_engine(args, reader)
        try:
            try:
                server = GdbServer(engine, host, port)
            except OSError as e:
                raise RrvmmError(
                    f"--gdb {args.gdb}: cannot listen on {host}:{port}: {e.strerror}",
                    ExitStatus.USAGE,
                ) from None
            with server:
                h, p = server.address
                print(
                    f"rrvmm: gdb server for {args.trace} on {h}:{p}"
                    f" ({engine.total_exits} exits); in gdb: target remote {h}:{p}",
                    file=sys.stderr,
                    flush=True,
                )
                server.serve_one()
        finally:
            engine.close()
    return 0


def _stdout_fd() -> int | None:
    try:
        return sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return None


def _progress_printer(total: int | None):  # noqa: ANN202
    last = [0.0]

    def show(index: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25:
            return
        last[0] = now
        of = f"/{total}" if total else ""
        print(f"\rrrvmm: replaying exit {index}{of}", end="", file=sys.stderr, flush=True)

    return show
