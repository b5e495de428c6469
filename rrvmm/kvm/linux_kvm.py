"""ctypes mirrors of the parts of linux/kvm.h and asm/kvm.h (x86) that rrvmm uses.

Names follow the kernel headers so the KVM API documentation reads straight across.
Struct sizes are asserted at import: a wrong layout would corrupt guest state silently.
"""

from __future__ import annotations

import ctypes as C

# --- ioctl number encoding (asm-generic/ioctl.h) ---
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (KVMIO << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(nr: int) -> int:  # noqa: N802 - kernel macro name
    return _ioc(_IOC_NONE, nr, 0)


def _IOR(nr: int, t: type) -> int:  # noqa: N802
    return _ioc(_IOC_READ, nr, C.sizeof(t))


def _IOW(nr: int, t: type) -> int:  # noqa: N802
    return _ioc(_IOC_WRITE, nr, C.sizeof(t))


def _IOWR(nr: int, t: type) -> int:  # noqa: N802
    return _ioc(_IOC_READ | _IOC_WRITE, nr, C.sizeof(t))


u8, u16, u32, u64 = C.c_uint8, C.c_uint16, C.c_uint32, C.c_uint64


class kvm_regs(C.Structure):  # noqa: N801
    _fields_ = [
        (n, u64)
        for n in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
        )
    ]


class kvm_segment(C.Structure):  # noqa: N801
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(C.Structure):  # noqa: N801
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(C.Structure):  # noqa: N801
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_fpu(C.Structure):  # noqa: N801
    _fields_ = [
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    ]


class _events_exception(C.Structure):
    _fields_ = [
        ("injected", u8),
        ("nr", u8),
        ("has_error_code", u8),
        ("pending", u8),
        ("error_code", u32),
    ]


class _events_interrupt(C.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _events_nmi(C.Structure):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _events_smi(C.Structure):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class kvm_vcpu_events(C.Structure):  # noqa: N801
    _fields_ = [
        ("exception", _events_exception),
        ("interrupt", _events_interrupt),
        ("nmi", _events_nmi),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", _events_smi),
        ("triple_fault_pending", u8),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    ]


class kvm_sync_regs(C.Structure):  # noqa: N801
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_msr_entry(C.Structure):  # noqa: N801
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


def kvm_msrs(n: int) -> type[C.Structure]:
    """struct kvm_msrs with room for ``n`` entries (a flexible array in C)."""

    class _kvm_msrs(C.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * n)]

    return _kvm_msrs


class kvm_msrs_hdr(C.Structure):  # noqa: N801
    _fields_ = [("nmsrs", u32), ("pad", u32)]


class kvm_msr_list_hdr(C.Structure):  # noqa: N801
    _fields_ = [("nmsrs", u32)]


class kvm_cpuid_entry2(C.Structure):  # noqa: N801
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # sic, as in the header


def kvm_cpuid2(n: int) -> type[C.Structure]:
    class _kvm_cpuid2(C.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * n)]

    return _kvm_cpuid2


class kvm_cpuid2_hdr(C.Structure):  # noqa: N801
    _fields_ = [("nent", u32), ("padding", u32)]


class kvm_userspace_memory_region(C.Structure):  # noqa: N801
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_dirty_log(C.Structure):  # noqa: N801
    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]


class kvm_interrupt(C.Structure):  # noqa: N801
    _fields_ = [("irq", u32)]


class kvm_mp_state(C.Structure):  # noqa: N801
    _fields_ = [("mp_state", u32)]


class kvm_irq_level(C.Structure):  # noqa: N801
    _fields_ = [("irq", u32), ("level", u32)]  # irq is a union with s32 status


class kvm_pic_state(C.Structure):  # noqa: N801
    _fields_ = [
        (n, u8)
        for n in (
            "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select",
            "poll", "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
            "special_fully_nested_mode", "init4", "elcr", "elcr_mask",
        )
    ]  # fmt: skip


class kvm_irqchip(C.Structure):  # noqa: N801
    """The in-kernel PIC master (chip 0), slave (1) or IOAPIC (2); ``chip`` is the union."""

    _fields_ = [("chip_id", u32), ("pad", u32), ("chip", C.c_char * 512)]


class kvm_lapic_state(C.Structure):  # noqa: N801
    _fields_ = [("regs", C.c_char * 1024)]


class kvm_guest_debug_arch(C.Structure):  # noqa: N801
    _fields_ = [("debugreg", u64 * 8)]


class kvm_guest_debug(C.Structure):  # noqa: N801
    _fields_ = [("control", u32), ("pad", u32), ("arch", kvm_guest_debug_arch)]


class kvm_debugregs(C.Structure):  # noqa: N801
    _fields_ = [
        ("db", u64 * 4),
        ("dr6", u64),
        ("dr7", u64),
        ("flags", u64),
        ("reserved", u64 * 9),
    ]


class kvm_xsave(C.Structure):  # noqa: N801
    _fields_ = [("region", u32 * 1024)]


class kvm_xcr(C.Structure):  # noqa: N801
    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class kvm_xcrs(C.Structure):  # noqa: N801
    _fields_ = [("nr_xcrs", u32), ("flags", u32), ("xcrs", kvm_xcr * 16), ("padding", u64 * 16)]


# --- struct kvm_run and its exit union members ---
class _run_io(C.Structure):
    _fields_ = [
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    ]


class _run_mmio(C.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class _run_internal(C.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_debug_exit_arch(C.Structure):  # noqa: N801
    _fields_ = [("exception", u32), ("pad", u32), ("pc", u64), ("dr6", u64), ("dr7", u64)]


class _run_fail_entry(C.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class _run_system_event(C.Structure):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class _run_exit_union(C.Union):
    _fields_ = [
        ("io", _run_io),
        ("mmio", _run_mmio),
        ("internal", _run_internal),
        ("debug", kvm_debug_exit_arch),
        ("fail_entry", _run_fail_entry),
        ("system_event", _run_system_event),
        ("padding", C.c_char * 256),
    ]


class _run_s(C.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", C.c_char * 2048)]


class kvm_run(C.Structure):  # noqa: N801
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("u", _run_exit_union),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", _run_s),
    ]


for _t, _size in (
    (kvm_regs, 144),
    (kvm_segment, 24),
    (kvm_sregs, 312),
    (kvm_fpu, 416),
    (kvm_vcpu_events, 64),
    (kvm_debugregs, 128),
    (kvm_guest_debug, 72),
    (kvm_xcrs, 392),
):
    assert C.sizeof(_t) == _size, (_t.__name__, C.sizeof(_t))
assert kvm_run.s.offset == 304 and kvm_run.kvm_valid_regs.offset == 288

# --- exit reasons ---
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_NAMES = {v: k for k, v in globals().items() if k.startswith("KVM_EXIT_")}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_HALTED = 3

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000
KVM_GUESTDBG_INJECT_DB = 0x00040000
KVM_GUESTDBG_BLOCKIRQ = 0x00100000

KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

KVM_VCPUEVENT_VALID_NMI_PENDING = 0x00000001
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x00000002
KVM_VCPUEVENT_VALID_SHADOW = 0x00000004

# --- capabilities ---
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_IRQFD = 32
KVM_CAP_IOEVENTFD = 36
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136

KVM_API_VERSION = 12

# --- ioctls ---
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_GET_MSR_INDEX_LIST = _IOWR(0x02, kvm_msr_list_hdr)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(0x05, kvm_cpuid2_hdr)
KVM_CREATE_VCPU = _IO(0x41)
KVM_GET_DIRTY_LOG = _IOW(0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _IO(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(0x48, u64)
KVM_CREATE_IRQCHIP = _IO(0x60)
KVM_IRQ_LINE = _IOW(0x61, kvm_irq_level)
KVM_GET_IRQCHIP = _IOWR(0x62, kvm_irqchip)
KVM_SET_IRQCHIP = _IOR(0x63, kvm_irqchip)
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, kvm_regs)
KVM_SET_REGS = _IOW(0x82, kvm_regs)
KVM_GET_SREGS = _IOR(0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(0x84, kvm_sregs)
KVM_INTERRUPT = _IOW(0x86, kvm_interrupt)
KVM_GET_MSRS = _IOWR(0x88, kvm_msrs_hdr)
KVM_SET_MSRS = _IOW(0x89, kvm_msrs_hdr)
KVM_GET_FPU = _IOR(0x8C, kvm_fpu)
KVM_SET_FPU = _IOW(0x8D, kvm_fpu)
KVM_SET_CPUID2 = _IOW(0x90, kvm_cpuid2_hdr)
KVM_GET_CPUID2 = _IOWR(0x91, kvm_cpuid2_hdr)
KVM_GET_LAPIC = _IOR(0x8E, kvm_lapic_state)
KVM_SET_LAPIC = _IOW(0x8F, kvm_lapic_state)
KVM_GET_MP_STATE = _IOR(0x98, kvm_mp_state)
KVM_SET_MP_STATE = _IOW(0x99, kvm_mp_state)
KVM_SET_GUEST_DEBUG = _IOW(0x9B, kvm_guest_debug)
KVM_GET_VCPU_EVENTS = _IOR(0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _IOW(0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = _IOR(0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = _IOW(0xA2, kvm_debugregs)
KVM_GET_XSAVE = _IOR(0xA4, kvm_xsave)
KVM_SET_XSAVE = _IOW(0xA5, kvm_xsave)
KVM_GET_XCRS = _IOR(0xA6, kvm_xcrs)
KVM_SET_XCRS = _IOW(0xA7, kvm_xcrs)

# MSRs the vCPU state must carry (long mode + syscall + TSC + PAT)
MSR_IA32_TSC = 0x10
MSR_IA32_APICBASE = 0x1B
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_CR_PAT = 0x277
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103
