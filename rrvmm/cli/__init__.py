"""`rrvmm` command line: run, record, replay and inspect guests.

Errors the user can fix are one line on stderr and a distinct exit status (see
``errors.ExitStatus``); the guest's serial output alone goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rrvmm import __version__
from rrvmm.cpu.backend import BackendError
from rrvmm.errors import ExitStatus, RrvmmError

if TYPE_CHECKING:
    from rrvmm.replay.container import TraceReader
    from rrvmm.replay.engine import ReplayEngine

__all__ = ["main", "parse_memory"]

log = logging.getLogger("rrvmm")

_SIZE_RE = re.compile(r"^(\d+)([KMGkmg]?)(i?[bB])?$")
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_MEMORY = "128M"


def parse_memory(text: str) -> int:
    """'256M', '1G', '65536K' or a plain number of MiB (as QEMU's -m)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise RrvmmError(f"--memory {text!r}: expected a size like 64M or 1G", ExitStatus.USAGE)
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if size > 64 << 30:
        raise RrvmmError(f"--memory {text}: more than 64G", ExitStatus.USAGE)
    return size


def demo_kernel_path() -> Path:
    return Path(str(resources.files("rrvmm.guests").joinpath("demo.mb")))


def kvm_device_path() -> str:
    """/dev/kvm unless RRVMM_KVM_DEVICE names another node (tests use it)."""
    return os.environ.get("RRVMM_KVM_DEVICE", "/dev/kvm")


def _add_machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel", help="multiboot kernel or Linux bzImage (default: the built-in demo guest)"
    )
    p.add_argument("--initrd", help="initrd / multiboot module")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--memory", "-m", default=DEFAULT_MEMORY, help="guest RAM (default 128M)")
    p.add_argument(
        "--backend",
        choices=("kvm", "soft", "auto"),
        default="auto",
        help="CPU backend: kvm, soft (unicorn), or auto = KVM where usable (default)",
    )
    p.add_argument(
        "--irqchip",
        choices=("user", "kernel"),
        default=None,
        help="interrupt controller on KVM: user = rrvmm's 8259, kernel = KVM's (fewer exits);"
        " default: the faster one, see README",
    )
    p.add_argument("--disk", metavar="IMAGE", help="a virtio-blk disk image")
    p.add_argument(
        "--disk-write",
        action="store_true",
        help="write the disk image itself (default: a copy-on-write overlay, the image is"
        " never changed)",
    )
    p.add_argument("--net", metavar="udp:HOST:PORT", help="virtio-net host end: a UDP port")
    p.add_argument(
        "--vconsole", metavar="udp:HOST:PORT", help="virtio-console host end: a UDP port"
    )
    p.add_argument(
        "--virtio-cmdline",
        action="store_true",
        help="also announce the virtio devices on the kernel command line"
        " (virtio_mmio.device=...; ACPI always describes them)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrvmm", description="Record/replay debugging hypervisor for guest kernels."
    )
    parser.add_argument("--version", action="version", version=f"rrvmm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log device details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a guest (no recording)")
    _add_machine_args(run)
    run.set_defaults(func=_cmd_run)
    rec = sub.add_parser("record", help="run a guest and record it to a trace")
    _add_machine_args(rec)
    rec.add_argument("-o", "--output", help="trace file (default: a new file under traces/)")
    rec.set_defaults(func=_cmd_record)
    rep = sub.add_parser("replay", help="replay a trace and check it exit by exit")
    rep.add_argument("trace")
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
        metavar="[HOST:]PORT",
        help="serve the replay to gdb (remote protocol) instead of running it; :1234 listens"
        " on 127.0.0.1",
    )
    rep.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        metavar="N",
        help="with --gdb or --console: take a checkpoint every N exits while replaying"
        " (default 1000)",
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
        help="with --console: the guest's symbols (default: the recorded kernel, if an ELF)",
    )
    rep.set_defaults(func=_cmd_replay)
    tr = sub.add_parser("trace", help="inspect, draw or compare traces")
    trace_sub = tr.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("info", "what a trace holds: header, images, end, packed or not"),
        ("dump", "every event, one per line"),
        ("stats", "counts and sizes"),
    ):
        a = trace_sub.add_parser(action, help=text)
        a.add_argument("trace")
        a.add_argument("--json", action="store_true", help="machine-readable output")
        a.set_defaults(func=_cmd_trace)
    from rrvmm.cli.tools import add_subcommands

    add_subcommands(sub, trace_sub)
    return parser


def _machine_setup(args: argparse.Namespace):  # noqa: ANN202
    from rrvmm.machine.cpu_choice import make_backend
    from rrvmm.machine.images import GuestImages
    from rrvmm.machine.pc import MachineConfig

    memory = parse_memory(args.memory)
    if args.disk_write and not args.disk:
        raise RrvmmError("--disk-write goes with --disk IMAGE", ExitStatus.USAGE)
    kernel_path = Path(args.kernel) if args.kernel else demo_kernel_path()
    images = GuestImages.load(kernel_path, args.initrd)
    config = MachineConfig(
        memory=memory,
        cmdline=args.append,
        kernel_name=kernel_path.name,
        virtio_cmdline=args.virtio_cmdline,
        disk=args.disk,
        disk_write=args.disk_write,
        net=args.net,
        vconsole=args.vconsole,
    )
    cpu = make_backend(args.backend, memory, kvm_device_path(), args.irqchip)
    return images, config, cpu


def _report_end(result, verbose: bool) -> None:  # noqa: ANN001
    if result.status != 0 or verbose:
        print(f"rrvmm: {result.reason}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import run_guest

    images, config, cpu = _machine_setup(args)
    try:
        result = run_guest(images, config, cpu, SerialHost(input_fd=_stdin_fd()))
    finally:
        cpu.close()
    _report_end(result, args.verbose)
    return result.status


def _default_trace_path(kernel_name: str) -> Path:
    stem = Path(kernel_name).stem
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("traces") / f"{stem}-{stamp}"
    path = base.with_suffix(".rrt")
    n = 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}.rrt")
    return path


def _cmd_record(args: argparse.Namespace) -> int:
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import record_guest

    images, config, cpu = _machine_setup(args)
    out = Path(args.output) if args.output else _default_trace_path(images.kernel_path.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        cpu.close()
        raise RrvmmError(f"cannot create {out.parent}: {e.strerror}", ExitStatus.NO_INPUT) from None
    try:
        result, recorder = record_guest(images, config, cpu, SerialHost(input_fd=_stdin_fd()), out)
    finally:
        cpu.close()
    _report_end(result, args.verbose)
    print(
        f"rrvmm: recorded {result.exits} exits ({recorder.forced_exits} forced) to {out}",
        file=sys.stderr,
    )
    return result.status


def _cmd_replay(args: argparse.Namespace) -> int:
    from rrvmm.launch import replay_trace
    from rrvmm.replay.container import open_trace

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
    if args.symbols is not None:
        raise RrvmmError("--symbols goes with --console", ExitStatus.USAGE)
    if args.gdb is not None:
        return _replay_gdb(args)
    with open_trace(args.trace) as reader:
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


def _cmd_trace(args: argparse.Namespace) -> int:
    from rrvmm.replay import inspect
    from rrvmm.replay.container import open_trace

    with open_trace(args.trace) as reader:
        return inspect.run(args.action, reader, args.json, sys.stdout)


def _stdin_fd() -> int | None:
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):
        return None
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="rrvmm: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except RrvmmError as e:
        print(f"rrvmm: {e}", file=sys.stderr)
        return e.status
    except BackendError as e:
        print(f"rrvmm: CPU backend error: {e}", file=sys.stderr)
        return ExitStatus.GUEST_CRASH
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("rrvmm: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
