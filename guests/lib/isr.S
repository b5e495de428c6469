/*
 * Interrupt/exception entry stubs for vectors 0-47.
 *
 * Each stub pushes a dummy error code (for vectors where the CPU pushes none)
 * and the vector number, then isr_common saves all GPRs and calls
 *     isr_dispatch(vector, error, rip, frame)
 * with frame = &struct isr_frame on the stack (see rt.h).  On return the
 * (possibly modified) registers are restored and IRETQ resumes.
 */

	.cfi_sections .debug_frame
	.text
	.code64

/* DWARF register numbers: rsp 7, return address (rip) 16, rflags 49. */
.macro SAVE reg
	pushq	%\reg
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset \reg, 0
.endm
.macro RESTORE reg
	popq	%\reg
	.cfi_adjust_cfa_offset -8
	.cfi_restore \reg
.endm

.macro ISR_NOERR n
	.balign 16
	.type isr_\n, @function
isr_\n:
	pushq	$0
	pushq	$\n
	jmp	isr_common
	.size isr_\n, . - isr_\n
.endm

.macro ISR_ERR n
	.balign 16
	.type isr_\n, @function
isr_\n:
	pushq	$\n
	jmp	isr_common
	.size isr_\n, . - isr_\n
.endm

/* Vectors for which the CPU pushes an error code: 8 10-14 17 21 29 30. */
.irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
	ISR_NOERR \n
.endr
.irp n, 8,10,11,12,13,14,17,21,29,30
	ISR_ERR \n
.endr
.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
	ISR_NOERR \n
.endr

	.balign 16
	.type isr_common, @function
isr_common:
	/* Unwind info: the caller is the interrupted context.  On entry RSP
	 * points at the vector; then error, RIP, CS, RFLAGS, RSP, SS. */
	.cfi_startproc simple
	.cfi_signal_frame
	.cfi_def_cfa rsp, 56
	.cfi_offset 16, -40             /* rip */
	.cfi_offset 49, -24             /* rflags */
	.cfi_offset 7, -16              /* rsp */
	SAVE rax
	SAVE rcx
	SAVE rdx
	SAVE rbx
	SAVE rbp
	SAVE rsi
	SAVE rdi
	SAVE r8
	SAVE r9
	SAVE r10
	SAVE r11
	SAVE r12
	SAVE r13
	SAVE r14
	SAVE r15
	cld
	/* 15 GPRs (120 bytes) + vector + error + 5 CPU words = 176 bytes on a
	 * 16-byte aligned RSP (the CPU aligns it in 64-bit mode): RSP is
	 * 16-byte aligned at the call, as the ABI wants. */
	movq	120(%rsp), %rdi         /* vector */
	movq	128(%rsp), %rsi         /* error code */
	movq	136(%rsp), %rdx         /* interrupted RIP */
	movq	%rsp, %rcx              /* struct isr_frame * */
	call	isr_dispatch
	RESTORE r15
	RESTORE r14
	RESTORE r13
	RESTORE r12
	RESTORE r11
	RESTORE r10
	RESTORE r9
	RESTORE r8
	RESTORE rdi
	RESTORE rsi
	RESTORE rbp
	RESTORE rbx
	RESTORE rdx
	RESTORE rcx
	RESTORE rax
	addq	$16, %rsp               /* vector, error code */
	.cfi_adjust_cfa_offset -16
	iretq
	.cfi_endproc
	.size isr_common, . - isr_common

	.section .rodata
	.balign 8
	.globl isr_stub_table
isr_stub_table:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
	.quad isr_\n
.endr

	.section .note.GNU-stack, "", @progbits
