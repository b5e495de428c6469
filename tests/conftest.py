"""Shared fixtures: guest kernels built from source, KVM availability."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rrvmm.kvm.kvm_backend import kvm_usable

REPO = Path(__file__).resolve().parent.parent
GUESTS = REPO / "guests"
_KVM_PROBLEM = kvm_usable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_kvm = pytest.mark.skip(reason=f"KVM not usable here: {_KVM_PROBLEM}")
    skip_qemu = pytest.mark.skip(reason="qemu-system-x86_64 is not installed")
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    for item in items:
        if _KVM_PROBLEM and "kvm" in item.keywords:
            item.add_marker(skip_kvm)
        if not have_qemu and "qemu" in item.keywords:
            item.add_marker(skip_qemu)


@pytest.fixture(scope="session")
def guest_dir() -> Path:
    """guests/build, built from source once per test session."""
    subprocess.run(["make", "-s", "-C", str(GUESTS)], check=True)
    return GUESTS / "build"


@pytest.fixture(scope="session")
def guest(guest_dir: Path):  # noqa: ANN201
    def path(name: str) -> Path:
        p = guest_dir / f"{name}.mb"
        assert p.exists(), f"guest {name} was not built"
        return p

    return path


@pytest.fixture(params=[pytest.param("kvm", marks=pytest.mark.kvm), "soft"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each CPU backend: KVM where /dev/kvm is usable, the software one everywhere."""
    return request.param


@pytest.fixture(scope="session")
def any_backend() -> str:
    """The backend for tests about something else than the CPU: KVM if usable, else soft."""
    return "soft" if _KVM_PROBLEM else "kvm"
