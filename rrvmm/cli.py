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
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import __version__
from .errors import ExitStatus, RrvmmError
from .kvm.backend import BackendError, BackendUnavailable

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
    p.add_argument("--kernel", help="multiboot kernel (default: the built-in demo guest)")
    p.add_argument("--initrd", help="initrd / multiboot module")
    p.add_argument("--append", default="", help="kernel command line")
    p.add_argument("--memory", "-m", default=DEFAULT_MEMORY, help="guest RAM (default 128M)")
    p.add_argument(
        "--backend", choices=("kvm", "auto"), default="auto", help="CPU backend (default auto)"
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
    return parser


def _make_backend(name: str, memory: int):  # noqa: ANN202 - returns a CpuBackend
    from .kvm.kvm_backend import KvmBackend

    try:
        return KvmBackend(memory, kvm_device_path())
    except BackendUnavailable as e:
        raise RrvmmError(f"KVM is not usable: {e}", ExitStatus.NO_KVM) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from .boot.kernel import read_image
    from .hostio import SerialHost
    from .kvm.cpuid import filter_cpuid
    from .machine import Machine, MachineConfig
    from .seam import LiveSeam

    memory = parse_memory(args.memory)
    kernel_path = Path(args.kernel) if args.kernel else demo_kernel_path()
    kernel = read_image(kernel_path)
    initrd = read_image(args.initrd, "initrd") if args.initrd else None
    cpu = _make_backend(args.backend, memory)
    try:
        from .kvm.kvm_backend import KvmBackend

        if isinstance(cpu, KvmBackend):
            cpu.set_cpuid(filter_cpuid(cpu.kvm.supported_cpuid()))
        serial = SerialHost(input_fd=_stdin_fd())
        seam = LiveSeam(serial)
        config = MachineConfig(memory=memory, cmdline=args.append, kernel_name=kernel_path.name)
        machine = Machine(config, cpu, seam, serial)
        machine.boot(kernel, initrd)
        seam.attach(cpu)
        try:
            with serial.terminal():
                result = machine.run()
        finally:
            seam.detach()
    finally:
        cpu.close()
    if result.status != 0 or args.verbose:
        print(f"rrvmm: {result.reason}", file=sys.stderr)
    return result.status


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
    except KeyboardInterrupt:
        print("rrvmm: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
