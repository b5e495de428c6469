"""Choosing the CPU backend a machine runs on, and the CPUID table a new recording gets.

The one place that names the concrete backends (KVM, the software CPU): everything else
takes a ``CpuBackend`` or, to record and replay, a ``RecordableCpu``, and asks it for the
rest (``instruction_counter()``, ``kernel_irqchip()``). Run, record and replay
(``rrvmm.replay.rig``) all come here.
"""

from __future__ import annotations

import sys

from rrvmm.cpu.backend import BackendUnavailable, CpuBackend, RecordableCpu
from rrvmm.cpu.cpuid import filter_cpuid, with_apic
from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["DEFAULT_KVM_IRQCHIP", "make_backend", "guest_cpuid"]


DEFAULT_KVM_IRQCHIP = "user"  # bench/irqchip.py: the faster exact mode on KVM


def make_backend(
    name: str, memory: int, kvm_device: str = "/dev/kvm", irqchip: str | None = None
) -> RecordableCpu:
    """The CPU backend ``name``: 'kvm', 'soft', or 'auto' (KVM where usable, else soft).

    ``irqchip``: 'user' or 'kernel' (KVM only); None picks the backend's default.
    RrvmmError (one line, a distinct status) when the named one cannot be had.
    Every backend can be recorded; what else it can do it tells through
    ``instruction_counter()`` and ``kernel_irqchip()``, asked once by each user.
    """
    from rrvmm.kvm.kvm_backend import KvmBackend

    if irqchip not in (None, "user", "kernel"):
        raise RrvmmError(f"unknown irqchip {irqchip!r} (user or kernel)", ExitStatus.USAGE)
    if name == "soft" and irqchip == "kernel":
        raise RrvmmError(
            "--irqchip kernel needs the KVM backend (the software CPU has rrvmm's 8259 only)",
            ExitStatus.USAGE,
        )
    if name in ("kvm", "auto"):
        try:
            return KvmBackend(memory, kvm_device, irqchip or DEFAULT_KVM_IRQCHIP)
        except OSError as e:  # the guest RAM mapping
            raise _no_memory(memory, e) from None
        except BackendUnavailable as e:
            if name == "kvm" or irqchip == "kernel":
                raise RrvmmError(f"KVM is not usable: {e}", ExitStatus.NO_KVM) from None
            print(f"rrvmm: KVM is not usable ({e}); using the software backend", file=sys.stderr)
    elif name != "soft":
        raise RrvmmError(f"unknown backend {name!r} (kvm, soft or auto)", ExitStatus.USAGE)
    from rrvmm.soft.backend import SoftBackend

    try:
        return SoftBackend(memory)
    except OSError as e:
        raise _no_memory(memory, e) from None
    except BackendUnavailable as e:
        raise RrvmmError(f"the software backend is not usable: {e}", ExitStatus.NO_KVM) from None


def _no_memory(memory: int, e: OSError) -> RrvmmError:
    return RrvmmError(
        f"cannot map {memory >> 20}M of guest RAM on this host: {e.strerror or e}",
        ExitStatus.USAGE,
    )


def guest_cpuid(cpu: CpuBackend, apic: bool = False) -> list[tuple[int, ...]]:
    """The CPUID table for a new recording: KVM's own, filtered, wherever KVM exists.

    XSAVE and what depends on it are hidden: KVM's instruction emulator (kvm_pvm hosts)
    cannot execute XRSTOR, and the software backend keeps the same table. ``apic``: the
    machine has a local APIC, and CPUID says so.
    """
    from rrvmm.kvm.kvm_backend import KvmBackend

    if isinstance(cpu, KvmBackend):
        rows = filter_cpuid(cpu.kvm.supported_cpuid(), hide_xsave=True)
    else:
        from rrvmm.cpu.cpuid_table import DEFAULT_CPUID

        rows = filter_cpuid(DEFAULT_CPUID, hide_xsave=True)  # the filter may have grown
    return with_apic(rows) if apic else rows  # type: ignore[arg-type]
