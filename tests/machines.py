"""The machines a behaviour is checked on, as `rrvmm record` options.

KVM with rrvmm's own PIC, KVM with its in-kernel irqchip (interrupts reach the guest by
another path, so replay has other ways to go wrong), and the software CPU everywhere.
"""

from __future__ import annotations

import pytest

__all__ = ["MACHINES", "backend_of"]

MACHINES = [
    pytest.param(["--backend", "kvm", "--irqchip", "user"], marks=pytest.mark.kvm, id="kvm-user"),
    pytest.param(
        ["--backend", "kvm", "--irqchip", "kernel"], marks=pytest.mark.kvm, id="kvm-kernel"
    ),
    pytest.param(["--backend", "soft"], id="soft"),
]


def backend_of(machine: list[str]) -> str:
    return machine[machine.index("--backend") + 1]
