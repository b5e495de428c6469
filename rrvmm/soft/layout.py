"""Where unicorn 2.1.4 keeps the x86 CPU state, and the x86 bits the soft backend uses.

Unicorn has no API for what a full-system CPU needs (interrupt delivery, privilege changes,
the exception error code, the instruction counter of ``emu_start``), so the backend reads
and writes QEMU's ``CPUX86State`` directly. These offsets belong to one unicorn build:
``engine.verify_layout`` checks each of them against unicorn's own accessors at start-up
and the backend refuses to run on any other version.
"""

from __future__ import annotations

from rrvmm.cpu.mmu import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA  # noqa: F401 - re-exported

UNICORN_VERSION = "2.1.4"
UNICORN_VERSION_WORD = 0x020104FF  # uc_version()'s combined number for 2.1.4 final

# struct uc_struct
UC_CPU = 440  # CPUState *cpu
UC_EMU_COUNTER = 1368  # size_t emu_counter: instructions started in this emu_start
UC_EMU_COUNT = 1376  # size_t emu_count: the count= limit
CPU_ENV = 35408  # offsetof(X86CPU, env)
CONTEXT_HEADER = 40  # struct uc_context before the copy of CPUX86State
CONTEXT_SIZE = 5608  # uc_context_size(): header + offsetof(CPUX86State, end_reset_fields)
ENV_SIZE = CONTEXT_SIZE - CONTEXT_HEADER

# CPUX86State
REGS = 0  # target_ulong regs[16] in QEMU order (rax rcx rdx rbx rsp rbp rsi rdi r8..r15)
EIP = 128
EFLAGS = 136  # complete outside emu_start (cpu_exec_exit recomputes it)
CC_OP = 168
HFLAGS = 176
HFLAGS2 = 180
SEGS = 184  # SegmentCache segs[6]: es cs ss ds fs gs
SEG_SIZE = 24  # u32 selector, u64 base (at +8), u32 limit (+16), u32 flags (+20)
LDT = 328
TR = 352
GDT = 376
IDT = 400
CR = 424  # target_ulong cr[9]
EFER = 592
SYSENTER_CS = 4800
SYSENTER_ESP = 4808
SYSENTER_EIP = 4816
STAR = 4824
LSTAR = 4840
CSTAR = 4848
FMASK = 4856
KERNEL_GS_BASE = 4864
TSC_AUX = 4896
PAT = 5280
ERROR_CODE = 5384  # int: error code of the exception being raised
EXCEPTION_IS_INT = 5388  # int: raised by INT n / INT3 / INTO (a trap)
EXCEPTION_NEXT_EIP = 5392
DR = 5400  # target_ulong dr[8]
OLD_EXCEPTION = 5496  # int: exception in flight (QEMU's #DF logic); -1 when none
RETADDR = 5560  # uintptr_t: host return address of the last TLB fill (0: code fetch)

# QEMU's register order in regs[] for the names of backend.GPR_NAMES
QEMU_GPR_INDEX = {
    "rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7,
    "r8": 8, "r9": 9, "r10": 10, "r11": 11, "r12": 12, "r13": 13, "r14": 14, "r15": 15,
}  # fmt: skip
R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI = range(8)
SEG_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)

# hflags
HF_CPL_MASK = 3
HF_INHIBIT_IRQ_MASK = 1 << 3
HF_CS32_MASK = 1 << 4
HF_SS32_MASK = 1 << 5
HF_PE_MASK = 1 << 7
HF_LMA_MASK = 1 << 14
HF_CS64_MASK = 1 << 15
HF2_GIF_MASK = 1

# segment descriptor bits as QEMU keeps them in SegmentCache.flags (the descriptor's high word)
DESC_TYPE_SHIFT = 8
DESC_S_MASK = 1 << 12
DESC_DPL_SHIFT = 13
DESC_P_MASK = 1 << 15
DESC_AVL_MASK = 1 << 20
DESC_L_MASK = 1 << 21
DESC_B_MASK = 1 << 22
DESC_G_MASK = 1 << 23
DESC_A_MASK = 1 << 8
DESC_W_MASK = 1 << 9
DESC_R_MASK = 1 << 9
DESC_C_MASK = 1 << 10
DESC_CS_MASK = 1 << 11

# control registers, EFLAGS, EFER
# (the paging bits are the page walk's: rrvmm.cpu.mmu)
CR0_PE = 1
CR0_WP = 1 << 16
EFER_SCE = 1
EFER_LME = 1 << 8
EFER_NXE = 1 << 11
TF_MASK = 1 << 8
IF_MASK = 1 << 9
DF_MASK = 1 << 10
NT_MASK = 1 << 14
RF_MASK = 1 << 16
VM_MASK = 1 << 17
AC_MASK = 1 << 18

# MSRs
MSR_TSC = 0x10
MSR_APIC_BASE = 0x1B
MSR_SYSENTER_CS = 0x174
MSR_SYSENTER_ESP = 0x175
MSR_SYSENTER_EIP = 0x176
MSR_PAT = 0x277
MSR_EFER = 0xC000_0080
MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_CSTAR = 0xC000_0083
MSR_FMASK = 0xC000_0084
MSR_FS_BASE = 0xC000_0100
MSR_GS_BASE = 0xC000_0101
MSR_KERNEL_GS_BASE = 0xC000_0102
MSR_TSC_AUX = 0xC000_0103

# exceptions
EXC_DE, EXC_DB, EXC_BP, EXC_UD = 0, 1, 3, 6
EXC_DF, EXC_TS, EXC_NP, EXC_SS, EXC_GP, EXC_PF = 8, 10, 11, 12, 13, 14
EXC_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
EXC_CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
