/*
 * rrvmm guest runtime: everything a test guest needs, nothing more.
 *
 * Boot: lib/boot.S (multiboot entry, long mode) calls rt_start(), which runs
 * rt_init() and then the guest's kmain(); kmain's return value goes to
 * rt_exit().  All code runs in ring 0, identity-mapped first 1 GiB.
 */
#ifndef RT_H
#define RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "multiboot.h"

#define NOINLINE __attribute__((noinline, noclone))
#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- entry points ------------------------------------------------------ */

/* Each guest defines this.  The return value is the exit status. */
int kmain(uint32_t magic, uint32_t mbinfo_phys);

/* serial_init + idt_init + pic_init (all masked) + multiboot parse. */
void rt_init(uint32_t magic, uint32_t mbinfo_phys);

/* Write `status` to isa-debug-exit (port 0xf4).  Never returns. */
NORETURN void rt_exit(int status);

/* Exit statuses the runtime itself uses. */
#define EXIT_UNHANDLED_EXCEPTION 126
#define EXIT_NO_EXIT_DEVICE      125 /* only ever seen if 0xf4 did not stop us */

#define DEBUG_EXIT_PORT 0xf4

/* ---- serial (COM1, 0x3f8, IRQ 4) --------------------------------------- */

#define COM1 0x3f8
#define UART_RBR 0 /* read, DLAB=0 */
#define UART_THR 0 /* write, DLAB=0 */
#define UART_DLL 0 /* DLAB=1 */
#define UART_IER 1 /* DLAB=0 */
#define UART_DLM 1 /* DLAB=1 */
#define UART_IIR 2 /* read */
#define UART_FCR 2 /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define UART_LSR_DR   0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_MCR_DTR  0x01
#define UART_MCR_RTS  0x02
#define UART_MCR_OUT1 0x04
#define UART_MCR_OUT2 0x08
#define UART_MCR_LOOP 0x10
#define UART_IER_RDI  0x01
#define UART_LCR_DLAB 0x80

#define COM1_IRQ 4

/* 115200 8N1, IER=0, MCR=DTR|RTS|OUT2.  Does not touch the FCR, so a byte the
 * host sent before the guest started is not thrown away. */
void serial_init(void);
void serial_putc(char c);                      /* bytes go out as they are */
void serial_write(const char *s, size_t n);
void serial_puts(const char *s);               /* no newline appended */
void serial_flush(void);                       /* wait for LSR.TEMT */

/* Interrupt-driven RX: installs the IRQ 4 handler (which drains RBR into a
 * 1 KiB ring), sets IER=1 and MCR=0x0b, unmasks IRQ 4 at the PIC. */
void serial_rx_irq_enable(void);
/* Poll the UART once and move whatever RBR holds into the ring (no IRQ). */
void serial_rx_poll_to_ring(void);
int serial_getc_nowait(void);                  /* -1 when the ring is empty */
int serial_getc(void);                         /* waits (sti;hlt), IF must be 0 */
/* Read one line: '\n', '\r' or "\r\n" end it; the terminator is not stored.
 * Returns the length; longer lines are truncated to size-1 bytes. */
size_t serial_readline(char *buf, size_t size);
extern volatile uint32_t serial_rx_dropped;    /* ring overflows */

/* ---- printf ----------------------------------------------------------- */
/* %s %c %d %i %u %x %X %p %%, flags '0' '-' '#', width, length l ll z. */
PRINTF_LIKE(1, 2) int printf(const char *fmt, ...);
int vprintf(const char *fmt, va_list ap);
PRINTF_LIKE(3, 4) int snprintf(char *buf, size_t size, const char *fmt, ...);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* ---- interrupts --------------------------------------------------------- */

/* What the ISR stub pushed, lowest address first.  Handlers may change any
 * field; rip/rflags/rsp are restored by IRETQ. */
struct isr_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

typedef void (*isr_handler_t)(struct isr_frame *f);

#define IDT_VECTORS 48
#define IRQ_BASE    32 /* IRQ n -> vector 32+n (PIC remapped by pic_init) */

void idt_init(void);                                  /* vectors 0-47 */
void isr_set_handler(unsigned vector, isr_handler_t h);
/* Handler for IRQ line `irq` (0-15).  The dispatcher sends the EOI after the
 * handler returns and filters spurious IRQ 7/15; handlers never EOI. */
void irq_set_handler(unsigned irq, isr_handler_t h);
/* The C dispatcher called by the assembly stub. */
void isr_dispatch(uint64_t vector, uint64_t error, uint64_t rip, struct isr_frame *f);
extern volatile uint32_t spurious_irqs;

/* ---- 8259 PIC ----------------------------------------------------------- */
void pic_init(void);            /* ICW1 0x11, ICW2 0x20/0x28, ICW3 4/2, ICW4 1; all masked */
void pic_mask(unsigned irq);
void pic_unmask(unsigned irq);  /* unmasking a slave IRQ also unmasks IRQ 2 */
void pic_eoi(unsigned irq);
int pic_in_service(unsigned irq);

/* ---- 8254 PIT ----------------------------------------------------------- */
#define PIT_HZ 1193182u
/* Program channel 0 (lobyte/hibyte) in `mode` (2 or 3) at `hz`.  Returns the
 * divisor actually used (clamped to 2..65535; 65536 is not used). */
unsigned pit_start(unsigned hz, unsigned mode);
unsigned pit_start_divisor(unsigned divisor, unsigned mode);
/* Stop channel 0: mode 0 control word with no count written. */
void pit_stop(void);
/* Counter-latch command, then read the 16-bit count. */
uint16_t pit_latch_count(void);
/* Read-back command (latch status + count of channel 0). */
void pit_readback(uint8_t *status, uint16_t *count);

/* ---- multiboot / command line ------------------------------------------ */
struct boot_info {
	uint32_t magic;                 /* EAX at entry */
	const struct mb_info *mbi;      /* NULL if the magic was wrong */
	uint32_t flags;                 /* mbi->flags (0 if none) */
	int has_mem;
	uint32_t mem_lower, mem_upper;  /* KiB */
	int has_cmdline;
	const char *cmdline;            /* copy in the runtime; "" if none */
	int has_mmap;
	unsigned mmap_count;
};
extern struct boot_info boot;

/* i-th memory map entry (0-based); 0 if out of range or no map. */
int mb_mmap_entry(unsigned i, uint64_t *addr, uint64_t *len, uint32_t *type);

/* Value after `key` (e.g. "exit=") where key starts a space-separated word of
 * the command line.  Decimal, or hex with 0x; optional '-'.  Returns `def`
 * when the key is missing or not followed by a number. */
long cmdline_get_int(const char *key, long def);
/* Copy the word after `key` into buf (NUL-terminated); 0 if missing. */
int cmdline_get_str(const char *key, char *buf, size_t size);

/* ---- string helpers ----------------------------------------------------- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

#endif
