"""Which CPU backend a new run gets, where KVM cannot run the guest here.

On hosts whose /dev/kvm has no hardware virtualization behind it (``kvm_pvm``: the CPU
flags show neither ``vmx`` nor ``svm``), KVM runs guests in its instruction emulator, and a
Linux kernel stops there with "KVM internal error ... emulation failure" (XRSTOR first, see
the README) after minutes. So under ``--backend auto`` a Linux bzImage gets the software
CPU on such a host, with a one-line note; an explicit ``--backend kvm`` is obeyed with a
one-line warning; and a KVM emulation failure always names ``--backend soft``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rrvmm.machine.boot.linux import is_bzimage

__all__ = ["cpu_flags", "kvm_is_emulated", "choose_backend", "EMULATION_HINT"]

EMULATION_HINT = (
    "this host's KVM has no hardware virtualization (no vmx/svm: it emulates the guest's"
    " instructions and cannot run all of them); --backend soft runs this guest"
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's flags from /proc/cpuinfo (empty if unreadable)."""
    try:
        with cpuinfo.open() as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def kvm_is_emulated(flags: frozenset[str]) -> bool:
    """KVM without VMX or SVM under it (flags known): guests run in KVM's emulator."""
    return bool(flags) and not ({"vmx", "svm"} & flags)


def choose_backend(requested: str, kernel: bytes, flags: frozenset[str] | None = None) -> str:
    """The backend to ask ``make_backend`` for, noting on stderr why when it is not the one
    requested (or when the requested one will fail on this guest)."""
    if not is_bzimage(kernel):
        return requested
    emulated = kvm_is_emulated(cpu_flags() if flags is None else flags)
    if not emulated:
        return requested
    if requested == "auto":
        print(
            "rrvmm: note: using the software CPU for this Linux kernel: this host's KVM has no"
            " hardware virtualization and stops Linux with an emulation failure",
            file=sys.stderr,
        )
        return "soft"
    if requested == "kvm":
        print(f"rrvmm: warning: {EMULATION_HINT}", file=sys.stderr)
    return requested
