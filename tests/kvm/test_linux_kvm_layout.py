"""The ctypes mirrors match linux/kvm.h as the C compiler sees it (sizes, offsets, ioctls)."""

from __future__ import annotations

import ctypes as C
import shutil
import subprocess
from pathlib import Path

import pytest

from rrvmm.kvm import linux_kvm as K

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/linux/kvm.h").exists(),
    reason="needs gcc and the kernel headers",
)

STRUCTS = [
    "kvm_regs", "kvm_sregs", "kvm_segment", "kvm_dtable", "kvm_fpu", "kvm_vcpu_events",
    "kvm_debugregs", "kvm_guest_debug", "kvm_xsave", "kvm_xcrs", "kvm_run",
    "kvm_userspace_memory_region", "kvm_dirty_log", "kvm_cpuid_entry2", "kvm_msr_entry",
    "kvm_sync_regs", "kvm_debug_exit_arch", "kvm_irq_level", "kvm_pic_state", "kvm_irqchip",
    "kvm_lapic_state",
]  # fmt: skip
OFFSETS = [
    ("kvm_run", "exit_reason"), ("kvm_run", "ready_for_interrupt_injection"),
    ("kvm_run", "if_flag"), ("kvm_run", "kvm_valid_regs"), ("kvm_run", "kvm_dirty_regs"),
    ("kvm_run", "s"), ("kvm_run", "immediate_exit"), ("kvm_run", "request_interrupt_window"),
    ("kvm_sregs", "cr0"), ("kvm_sregs", "efer"), ("kvm_sregs", "interrupt_bitmap"),
    ("kvm_vcpu_events", "exception_payload"), ("kvm_vcpu_events", "flags"),
    ("kvm_fpu", "xmm"), ("kvm_fpu", "mxcsr"),
]  # fmt: skip
IOCTLS = [
    "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
    "KVM_INTERRUPT", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_GET_FPU", "KVM_SET_FPU",
    "KVM_SET_CPUID2", "KVM_GET_SUPPORTED_CPUID", "KVM_SET_USER_MEMORY_REGION",
    "KVM_GET_DIRTY_LOG", "KVM_SET_GUEST_DEBUG", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS",
    "KVM_GET_DEBUGREGS", "KVM_SET_DEBUGREGS", "KVM_GET_XSAVE", "KVM_SET_XSAVE",
    "KVM_GET_XCRS", "KVM_SET_XCRS", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE",
    "KVM_CREATE_VM", "KVM_CREATE_VCPU", "KVM_GET_VCPU_MMAP_SIZE", "KVM_CHECK_EXTENSION",
    "KVM_CREATE_IRQCHIP", "KVM_IRQ_LINE", "KVM_GET_IRQCHIP", "KVM_SET_IRQCHIP", "KVM_GET_LAPIC",
    "KVM_SET_LAPIC",
]  # fmt: skip


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    d = tmp_path_factory.mktemp("layout")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>", "int main(){"]
    for s in STRUCTS:
        lines.append(f'printf("sizeof {s} %zu\\n", sizeof(struct {s}));')
    for s, f in OFFSETS:
        lines.append(f'printf("offsetof {s}.{f} %zu\\n", offsetof(struct {s}, {f}));')
    for name in IOCTLS:
        lines.append(f'printf("ioctl {name} %lu\\n", (unsigned long){name});')
    lines.append("return 0;}")
    src = d / "layout.c"
    src.write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(d / "layout"), str(src)], check=True)
    out = subprocess.run([str(d / "layout")], capture_output=True, text=True, check=True).stdout
    return {" ".join(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_sizes(c_layout: dict[str, int], name: str) -> None:
    assert C.sizeof(getattr(K, name)) == c_layout[f"sizeof {name}"]


@pytest.mark.parametrize(("struct", "field"), OFFSETS)
def test_field_offsets(c_layout: dict[str, int], struct: str, field: str) -> None:
    assert getattr(getattr(K, struct), field).offset == c_layout[f"offsetof {struct}.{field}"]


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers(c_layout: dict[str, int], name: str) -> None:
    assert getattr(K, name) == c_layout[f"ioctl {name}"]
