"""`rrvmm run` and `rrvmm record`: boot a guest on a CPU backend, live (and logged)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    run = sub.add_parser("run", help="run a guest (no recording)")
    add_machine_args(run)
    run.set_defaults(func=_cmd_run)
    rec = sub.add_parser("record", help="run a guest and record it to a trace")
    add_machine_args(rec)
    rec.add_argument("-o", "--output", help="trace file (default: a new file under traces/)")
    rec.set_defaults(func=_cmd_record)


def _machine_setup(args: argparse.Namespace):  # noqa: ANN202
    from rrvmm.launch import GuestImages, make_backend
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
    from rrvmm.host.signals import stop_signals
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import run_guest

    with stop_signals() as stops:  # SIGINT/SIGTERM: stop at the next exit
        images, config, cpu = _machine_setup(args)
        serial = SerialHost(input_fd=stdin_fd())
        stops.listen(serial.request_stop)
        try:
            result = run_guest(images, config, cpu, serial)
        finally:
            cpu.close()
    _report_end(result, args.verbose)
    return result.status


def _record(args: argparse.Namespace, stops: StopSignals):  # noqa: ANN202
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import record_guest

    if args.output:
        _refuse_to_overwrite_an_image(Path(args.output), args)
    images, config, cpu = _machine_setup(args)
    out = Path(args.output) if args.output else _default_trace_path(images.kernel_path.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        cpu.close()
        raise RrvmmError(f"cannot create {out.parent}: {e.strerror}", ExitStatus.NO_INPUT) from None
    serial = SerialHost(input_fd=stdin_fd())
    stops.listen(serial.request_stop)
    try:
        result, recorder = record_guest(images, config, cpu, serial, out)
    finally:
        cpu.close()
    return result, recorder, out


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
    from rrvmm.host.signals import stop_signals

    # SIGINT/SIGTERM stop the guest at the next exit and the trace is closed as usual
    with stop_signals() as stops:
        result, recorder, out = _record(args, stops)
    _report_end(result, args.verbose)
    print(
        f"rrvmm: recorded {result.exits} exits ({recorder.forced_exits} forced) to {out}",
        file=sys.stderr,
    )
    return result.status
