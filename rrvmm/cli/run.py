"""`rrvmm run` and `rrvmm record`: boot a guest on a CPU backend, live (and logged)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rrvmm import store
from rrvmm.cli.backend_choice import EMULATION_HINT, choose_backend, cpu_flags, kvm_is_emulated
from rrvmm.cli.chaos import add_chaos_arg, chaos_settings
from rrvmm.cli.live_gdb import add_gdb_arg, live_gdb_driver
from rrvmm.cli.options import (
    add_machine_args,
    demo_kernel_path,
    kvm_device_path,
    parse_memory,
    stdin_fd,
)
from rrvmm.errors import ExitStatus, RrvmmError

if TYPE_CHECKING:
    from rrvmm.host.signals import StopSignals

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run a guest (no recording)",
        description="Boot a guest kernel (multiboot ELF or Linux bzImage; default: the built-in"
        " demo) on a CPU backend with its serial port on this terminal (Ctrl-A x quits)."
        " The exit status is the guest's (its isa-debug-exit value), or rrvmm's own for a"
        " crash or a stuck guest. With --gdb, gdb drives it from its first instruction.",
    )
    add_machine_args(run)
    add_gdb_arg(run)
    run.set_defaults(func=_cmd_run)
    rec = sub.add_parser(
        "record",
        help="run a guest and record it to a trace",
        description="Run a guest as `rrvmm run` does and write every nondeterministic input"
        " to a trace: by default NAME-N.rrt in the trace store ($RRVMM_TRACE_DIR, else"
        " ~/.local/share/rrvmm/traces; `rrvmm ls` lists it, `rrvmm replay` replays the"
        " latest), or the file -o names. The exit status is the guest's.",
    )
    add_machine_args(rec)
    add_gdb_arg(rec)
    rec.add_argument(
        "-o",
        "--output",
        help="trace file (default: NAME-N.rrt in the trace store, see `rrvmm ls`)",
    )
    add_chaos_arg(rec)
    rec.set_defaults(func=_cmd_record)


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
        apic=args.apic == "on",
        test_devices=args.test_devices,
    )
    backend = args.backend
    if args.irqchip != "kernel":  # --irqchip kernel asks for KVM itself
        backend = choose_backend(backend, images.kernel)
    cpu = make_backend(backend, memory, kvm_device_path(), args.irqchip)
    return images, config, cpu


def _report_end(result, verbose: bool) -> None:  # noqa: ANN001
    if result.status != 0 or verbose:
        print(f"rrvmm: {result.reason}", file=sys.stderr)
    if "KVM internal error" in result.reason and kvm_is_emulated(cpu_flags()):
        print(f"rrvmm: hint: {EMULATION_HINT}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from rrvmm.host.signals import stop_signals
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import run_guest

    drive, close_gdb = live_gdb_driver(args.gdb, recording=False)
    try:
        with stop_signals() as stops:  # SIGINT/SIGTERM: stop at the next exit
            images, config, cpu = _machine_setup(args)
            serial = SerialHost(input_fd=stdin_fd())
            stops.listen(serial.request_stop)
            try:
                result = run_guest(images, config, cpu, serial, drive)
            finally:
                cpu.close()
    finally:
        close_gdb()
    _report_end(result, args.verbose)
    return result.status


def _output_path(text: str) -> Path:
    """``-o`` as given; its directory must exist (a typo must not create directories)."""
    out = Path(text)
    parent = out.parent
    if not parent.is_dir():
        raise RrvmmError(
            f"cannot write {out}: directory {parent} does not exist", ExitStatus.NO_INPUT
        )
    if out.is_dir():
        raise RrvmmError(f"cannot write {out}: it is a directory", ExitStatus.NO_INPUT)
    return out


def _refuse_to_overwrite_an_image(out: Path, args: argparse.Namespace) -> None:
    """``-o`` naming the kernel, initrd or disk would destroy what the trace needs."""
    kernel = Path(args.kernel) if args.kernel else demo_kernel_path()
    for what, image in (("kernel", kernel), ("initrd", args.initrd), ("disk", args.disk)):
        if image is None:
            continue
        try:
            same = os.path.samefile(out, image)
        except OSError:
            continue  # one of them does not exist (yet): nothing to overwrite
        if same:
            raise RrvmmError(
                f"-o {out} is the {what} image of this recording: refusing to overwrite it",
                ExitStatus.USAGE,
            )


def _cmd_record(args: argparse.Namespace) -> int:
    from rrvmm.host.signals import stop_signals

    out = _output_path(args.output) if args.output else None
    if out is not None:
        _refuse_to_overwrite_an_image(out, args)
    drive, close_gdb = live_gdb_driver(args.gdb, recording=True)
    try:
        # SIGINT/SIGTERM stop the guest at the next exit and the trace is closed as usual
        with stop_signals() as stops:
            return _record(args, out, drive, stops)
    finally:
        close_gdb()


def _record(args: argparse.Namespace, out: Path | None, drive, stops: StopSignals) -> int:  # noqa: ANN001
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import record_guest

    chaos = chaos_settings(args)
    images, config, cpu = _machine_setup(args)
    in_store = out is None
    try:
        if out is None:
            out = store.new_trace_path(images.kernel_path.name)
    except BaseException:
        cpu.close()
        raise
    try:
        serial = SerialHost(input_fd=stdin_fd())
        stops.listen(serial.request_stop)
        result, recorder = record_guest(images, config, cpu, serial, out, drive, chaos)
    except BaseException:
        if in_store and out.stat().st_size == 0:
            out.unlink()  # the name reserved for a recording that never started
        elif in_store:
            store.set_latest(out)  # a cut recording still replays up to the cut
        raise
    finally:
        cpu.close()
    if in_store:
        store.set_latest(out)
    _report_end(result, args.verbose)
    named = f" ({store.trace_name(out)}: `rrvmm replay` replays it)" if in_store else ""
    print(
        f"rrvmm: recorded {result.exits} exits ({recorder.forced_exits} forced) to {out}{named}",
        file=sys.stderr,
    )
    return result.status
