"""Options shared by the verbs: machine options, sizes, where the demo guest and KVM are."""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import resources
from pathlib import Path

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = [
    "DEFAULT_MEMORY",
    "MAX_MEMORY",
    "host_memory_limit",
    "add_machine_args",
    "demo_kernel_path",
    "kvm_device_path",
    "parse_memory",
    "stdin_fd",
]

_SIZE_RE = re.compile(r"^(\d+)([KMGkmg]?)(i?[bB])?$")
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_MEMORY = "128M"
MAX_MEMORY = 64 << 30  # the most rrvmm gives a guest (RAM is one host mapping, holed at 3G)
_PAGE = 4096


def parse_memory(text: str) -> int:
    """'256M', '1G', '65536K' or a plain number of MiB (as QEMU's -m): whole 4K pages, at
    most ``MAX_MEMORY`` and at most what this host can map (its RAM and swap)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise RrvmmError(f"--memory {text!r}: expected a size like 64M or 1G", ExitStatus.USAGE)
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if size == 0:
        raise RrvmmError(
            f"--memory {text}: the guest needs some RAM (at least 2M)", ExitStatus.USAGE
        )
    if size % _PAGE:
        raise RrvmmError(f"--memory {text}: not a whole number of 4K pages", ExitStatus.USAGE)
    if size > MAX_MEMORY:
        raise RrvmmError(
            f"--memory {text}: more than {MAX_MEMORY >> 30}G, the most rrvmm gives a guest",
            ExitStatus.USAGE,
        )
    limit = host_memory_limit()
    if limit is not None and size > limit:
        raise RrvmmError(
            f"--memory {text}: more than this host can give a guest"
            f" ({limit / (1 << 30):.1f}G: its RAM and swap)",
            ExitStatus.USAGE,
        )
    return size


def host_memory_limit() -> int | None:
    """The largest private mapping Linux grants here, or None if unknown or unlimited.

    Guest RAM is one anonymous mapping; under the default overcommit heuristic Linux
    refuses one larger than RAM plus swap (mode 2: the commit limit), which would end in an
    OSError deep in the backend.
    """
    try:
        mode = int(Path("/proc/sys/vm/overcommit_memory").read_text())
        meminfo = Path("/proc/meminfo").read_text()
    except (OSError, ValueError):
        return None
    if mode == 1:  # always overcommit
        return None
    fields: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            fields[key] = int(words[0]) * 1024
    if mode == 2:
        return fields.get("CommitLimit")
    total = fields.get("MemTotal", 0) + fields.get("SwapTotal", 0)
    return total or None


def demo_kernel_path() -> Path:
    return Path(str(resources.files("rrvmm.guests").joinpath("demo.mb")))


def kvm_device_path() -> str:
    """/dev/kvm unless RRVMM_KVM_DEVICE names another node (tests use it)."""
    return os.environ.get("RRVMM_KVM_DEVICE", "/dev/kvm")


def add_machine_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--apic",
        choices=("on", "off"),
        default="off",
        help="the modern PC: a local APIC and an I/O APIC (MADT in the ACPI tables) beside"
        " the 8259; off (default) = the 8259 only. Needs --irqchip user on KVM",
    )
    p.add_argument(
        "--test-devices",
        action="store_true",
        help="QEMU's pc-testdev (ports 0xe0, 0x2000; MMIO 0xff000000) and isa-debug-exit"
        " statuses as QEMU computes them ((V << 1) | 1), as kvm-unit-tests expects",
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


def stdin_fd() -> int | None:
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):
        return None
    return fd
