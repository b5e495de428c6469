/*
 * Multiboot v1 entry and the switch to long mode.
 *
 * The loader enters _start32 in 32-bit protected mode, paging off,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot info.  We load
 * our own GDT, point CR3 at static page tables that identity-map the first
 * 1 GiB with 2 MiB pages, enable PAE + EFER.LME + paging, far-jump to 64-bit
 * code, zero .bss, set up the stack and call rt_start(magic, mbinfo).
 *
 * Built with -DMB_AOUT this file produces the "a.out kludge" header (flags
 * bit 16 with explicit load addresses) for a flat binary image.
 */

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_PAGE_ALIGN   (1 << 0)
#define MB_MEMORY_INFO  (1 << 1)
#define MB_AOUT_KLUDGE  (1 << 16)

#ifdef MB_AOUT
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_AOUT_KLUDGE)
#else
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

#define MSR_EFER   0xC0000080
#define EFER_LME   (1 << 8)
#define CR0_PE     (1 << 0)
#define CR0_PG     (1 << 31)
#define CR4_PAE    (1 << 5)

#define SEL_CODE64 0x08
#define SEL_DATA   0x10

#define STACK_SIZE 16384

	.cfi_sections .debug_frame

	.section .multiboot, "a"
	.balign 4
	.globl mb_header
mb_header:
	.long MB_HEADER_MAGIC
	.long MB_FLAGS
	.long -(MB_HEADER_MAGIC + MB_FLAGS)
#ifdef MB_AOUT
	.long mb_header         /* header_addr */
	.long __image_start     /* load_addr: file offset 0 */
	.long _edata            /* load_end_addr: end of the file's contents */
	.long _end              /* bss_end_addr: the loader zeroes up to here */
	.long _start32          /* entry_addr */
#endif

	.section .text.boot, "ax"
	.code32
	.globl _start32
	.type _start32, @function
_start32:
	cli
	cld
	movl	%eax, %ebp              /* multiboot magic; EBX keeps the info */

	lgdt	gdt_ptr

	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4

	movl	$pml4, %eax
	movl	%eax, %cr3

	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr

	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0

	ljmp	$SEL_CODE64, $_start64
	.size _start32, . - _start32

	.code64
	.globl _start64
	.type _start64, @function
_start64:
	.cfi_startproc
	.cfi_undefined rip              /* outermost frame for debuggers */
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs

	/* Zero .bss (the loader should have; do not depend on it). */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$3, %ecx
	xorl	%eax, %eax
	rep stosq

	movl	$__stack_top, %esp      /* zero-extends into RSP */
	movl	%ebp, %edi              /* arg 1: magic */
	movl	%ebx, %esi              /* arg 2: multiboot info (physical) */
	xorl	%ebp, %ebp              /* end of frame-pointer chain */
	call	rt_start
1:	cli
	hlt
	jmp	1b
	.cfi_endproc
	.size _start64, . - _start64

	.section .data.boot, "aw"
	.balign 16
gdt:
	.quad 0                         /* 0x00 null */
	.quad 0x00AF9B000000FFFF        /* 0x08 64-bit code, DPL0, accessed */
	.quad 0x00CF93000000FFFF        /* 0x10 flat data, DPL0, accessed */
	.quad 0x00CF9B000000FFFF        /* 0x18 flat 32-bit code (unused) */
gdt_end:
	.balign 8
	.word 0
gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt

/* Static page tables: no instructions spent building them. */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl pml4, pdpt, pd
pml4:
	.quad pdpt + 0x3                /* present, writable */
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x3
	.fill 511, 8, 0                 /* 1 GiB and up: not present -> #PF */
pd:
	.set i, 0
	.rept 512
	.quad (i << 21) | 0x83          /* 2 MiB page: present, writable, PS */
	.set i, i + 1
	.endr

	.section .stack, "aw", @nobits
	.balign 16
	.globl __stack_bottom, __stack_top
__stack_bottom:
	.skip STACK_SIZE
__stack_top:

	.section .note.GNU-stack, "", @progbits
