/*
 * apic: the local APIC and the I/O APIC, as a kernel in APIC mode uses them.
 *
 * Needs `rrvmm --apic on` (or QEMU's pc machine).  Checks, in order:
 *   1. CPUID.1:EDX[9] says there is an APIC; the ID, version and LVT count
 *      read back; the 8259 is masked and LINT0 masked (symmetric I/O mode).
 *   2. LAPIC timer, one-shot: `oneshots=` (default 5) single shots of
 *      `count=` (default 1000000) ticks at divide-by-1, each waited for with
 *      sti;hlt; the current count decreases while it runs and reads 0 after.
 *   3. LAPIC timer, periodic: `periods=` (default 20) interrupts, then masked.
 *   4. LAPIC timer, TSC-deadline: run when CPUID.1:ECX[24] offers it (rrvmm
 *      does not: its MSR is not visible to the machine), else reported absent.
 *   5. I/O APIC, edge: the PIT on pin 2 (ISA IRQ 0, the MADT's override) at
 *      `hz=` (default 1000) for `pitticks=` (default 10) interrupts.
 *   6. I/O APIC, level: the UART's THR-empty interrupt (IRQ 4) routed level
 *      triggered.  The handler leaves the source asserted on its first entry
 *      and EOIs: the I/O APIC must send it again (remote IRR, EOI broadcast);
 *      the second entry acknowledges the UART (reads IIR) and then EOIs.
 *   0. fw_cfg (QEMU's, ports 0x510/0x511): signature "QEMU", one CPU, the
 *      RAM size agrees with the multiboot memory information.
 *   7. Priority and EOI order: inside a class-1 handler, a self IPI of class
 *      1 waits for the EOI, one of class 2 nests at once; TPR holds back a
 *      vector of its class until lowered; a masked I/O APIC pin is not sent.
 * Every interrupt appends (vector, interrupted RIP) to an FNV-1a hash, so the
 * last line depends on exactly where each landed:
 *     "apic events=N order=0x... hash=0x..."
 * Exit 0, or 1 on a failed check (with a line saying which).
 */
#include "rt.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

#define LAPIC_BASE  0xfee00000ul
#define IOAPIC_BASE 0xfec00000ul

#define APIC_ID     0x20
#define APIC_VER    0x30
#define APIC_TPR    0x80
#define APIC_EOI    0xb0
#define APIC_SVR    0xf0
#define APIC_ISR    0x100
#define APIC_IRR    0x200
#define APIC_ICR    0x300
#define APIC_LVTT   0x320
#define APIC_LINT0  0x350
#define APIC_LINT1  0x360
#define APIC_LVTERR 0x370
#define APIC_TMICT  0x380
#define APIC_TMCCT  0x390
#define APIC_TDCR   0x3e0

#define LVT_MASKED   (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define LVT_TSCDL    (2u << 17)

/* Vectors.  The IDT has 0-47; 32-47 go through the runtime's IRQ path
 * (which also EOIs the masked 8259: harmless).  Classes: 0x1x and 0x2x. */
#define V_TIMER   0x1b /* class 1 (no error-code stub) */
#define V_LOW     0x19 /* class 1, below the timer */
#define V_HIGH    0x2d /* class 2: nests inside class 1 */
#define V_PIT     0x22
#define V_UART    0x2a
#define V_TPR     0x26
#define V_SPUR    0x2f /* the runtime counts 47 as spurious */

#define ORDER_MAX 64

static volatile uint64_t hash = FNV_OFFSET;
static volatile uint32_t events;
static volatile uint32_t count_timer, count_pit, count_uart, count_low, count_high, count_tpr;
static volatile uint8_t order[ORDER_MAX];
static volatile uint32_t order_len;
static volatile int nest_test; /* the timer handler runs the nesting check */
static int failures;

static uint64_t pd_high[512] __attribute__((aligned(4096)));
extern uint64_t pdpt[512];

static uint64_t fnv_fold(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		h ^= v & 0xff;
		h *= FNV_PRIME;
		v >>= 8;
	}
	return h;
}

static uint32_t lapic_read(uint32_t reg)
{
	return *(volatile uint32_t *)(LAPIC_BASE + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(LAPIC_BASE + reg) = v;
}

static void ioapic_write(uint32_t index, uint32_t v)
{
	*(volatile uint32_t *)(IOAPIC_BASE) = index;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

static uint32_t ioapic_read(uint32_t index)
{
	*(volatile uint32_t *)(IOAPIC_BASE) = index;
	return *(volatile uint32_t *)(IOAPIC_BASE + 0x10);
}

static void ioapic_route(unsigned pin, uint32_t low)
{
	ioapic_write(0x11 + 2 * pin, 0); /* destination: APIC ID 0 */
	ioapic_write(0x10 + 2 * pin, low);
}

static void check(int ok, const char *what)
{
	if (!ok) {
		printf("apic FAIL: %s\n", what);
		failures++;
	}
}

static void note(struct isr_frame *f, uint8_t vector)
{
	hash = fnv_fold(fnv_fold(hash, vector), f->rip);
	events++;
	if (order_len < ORDER_MAX)
		order[order_len++] = vector;
}

/* IF=1 for a while with no exit: a VMM may deliver a pending interrupt only
 * at the end of a batch of instructions (KVM's emulator, rrvmm's software
 * CPU in 1024-instruction window chunks), never later than this. */
static void open_window(void)
{
	sti();
	for (volatile int i = 0; i < 4000; i++)
		;
	cli();
}

static void self_ipi(uint8_t vector)
{
	lapic_write(APIC_ICR + 0x10, 0);
	lapic_write(APIC_ICR, (1u << 18) | (1u << 14) | vector); /* self, fixed */
}

static void on_timer(struct isr_frame *f)
{
	note(f, V_TIMER);
	count_timer++;
	if (nest_test) {
		nest_test = 0;
		self_ipi(V_LOW);  /* same class as in service: must wait for our EOI */
		self_ipi(V_HIGH); /* higher class: taken at the sti below */
		open_window();
		check(count_high == 1, "class-2 IPI nested in the class-1 handler");
		check(count_low == 0, "class-1 IPI waited for the EOI");
	}
	lapic_write(APIC_EOI, 0);
}

static void on_low(struct isr_frame *f)
{
	note(f, V_LOW);
	count_low++;
	lapic_write(APIC_EOI, 0);
}

static void on_high(struct isr_frame *f)
{
	note(f, V_HIGH);
	count_high++;
	lapic_write(APIC_EOI, 0);
}

static void on_tpr(struct isr_frame *f)
{
	note(f, V_TPR);
	count_tpr++;
	lapic_write(APIC_EOI, 0);
}

static void on_pit(struct isr_frame *f)
{
	note(f, V_PIT);
	count_pit++;
	lapic_write(APIC_EOI, 0);
}

static void on_uart(struct isr_frame *f)
{
	note(f, V_UART);
	/* Odd entries leave THRE pending: after the EOI the level pin is sent
	 * again.  Even entries acknowledge the UART first. */
	if (count_uart++ & 1) {
		inb(COM1 + UART_IIR);
		outb(COM1 + UART_IER, 0);
	}
	lapic_write(APIC_EOI, 0);
}

static uint64_t fw_cfg_read(uint16_t key, unsigned n)
{
	uint64_t v = 0;
	outw(0x510, key);
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)inb(0x511) << (8 * i);
	return v;
}

static void test_fw_cfg(void)
{
	check(fw_cfg_read(0, 4) == 0x554d4551, "fw_cfg signature QEMU");
	check(fw_cfg_read(5, 2) == 1, "fw_cfg: one CPU");
	uint64_t ram = fw_cfg_read(3, 8);
	uint64_t mb = ((uint64_t)boot.mem_upper + 1024) * 1024; /* QEMU keeps a bit back */
	check(ram > 0xc0000000ull || (ram >= mb && ram - mb < (1u << 20)),
	      "fw_cfg RAM size matches the multiboot memory information");
}

static void map_apic_pages(void)
{
	/* 3-4 GiB: the two APIC pages, 2 MiB pages, uncached. */
	pd_high[(IOAPIC_BASE - 0xc0000000ul) >> 21] = (IOAPIC_BASE & ~0x1ffffful) | 0x9b;
	pd_high[(LAPIC_BASE - 0xc0000000ul) >> 21] = (LAPIC_BASE & ~0x1ffffful) | 0x9b;
	pdpt[3] = (uint64_t)(uintptr_t)pd_high | 0x3;
	__asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
}

static void wait_for(volatile uint32_t *counter, uint32_t target)
{
	while (*counter < target) {
		__asm__ volatile("sti; hlt; cli" : : : "memory");
	}
}

static int has_cpuid_bit(unsigned reg, unsigned bit)
{
	uint32_t a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return (int)(((reg == 2 ? c : d) >> bit) & 1);
}

static void test_oneshot(long shots, long count)
{
	lapic_write(APIC_TDCR, 0xb); /* divide by 1 */
	for (long i = 0; i < shots; i++) {
		uint32_t before = count_timer;
		lapic_write(APIC_LVTT, V_TIMER);
		lapic_write(APIC_TMICT, (uint32_t)count);
		uint32_t c1 = lapic_read(APIC_TMCCT);
		for (volatile int j = 0; j < 200; j++)
			;
		uint32_t c2 = lapic_read(APIC_TMCCT);
		/* On KVM guest time is host time: a preempted vCPU may find the
		 * shot over already (0), never a count that grew. */
		if (!(c1 <= (uint32_t)count && (c1 == 0 || c2 < c1)))
			printf("apic FAIL: one-shot current count %u then %u of %ld\n", c1, c2,
			       count), failures++;
		wait_for(&count_timer, before + 1);
		check(lapic_read(APIC_TMCCT) == 0, "one-shot current count is 0 after expiry");
	}
}

static void test_periodic(long periods, long count)
{
	uint32_t before = count_timer;
	lapic_write(APIC_LVTT, V_TIMER | LVT_PERIODIC);
	lapic_write(APIC_TMICT, (uint32_t)count);
	wait_for(&count_timer, before + (uint32_t)periods);
	lapic_write(APIC_LVTT, V_TIMER | LVT_MASKED);
	lapic_write(APIC_TMICT, 0);
	check(count_timer == before + (uint32_t)periods, "periodic: no extra interrupt after mask");
}

static void test_tsc_deadline(void)
{
	if (!has_cpuid_bit(2, 24)) {
		printf("apic tsc-deadline: absent\n");
		return;
	}
	uint32_t before = count_timer;
	lapic_write(APIC_LVTT, V_TIMER | LVT_TSCDL);
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	uint64_t deadline = ((uint64_t)hi << 32 | lo) + 50000;
	__asm__ volatile("wrmsr" : : "c"(0x6e0), "a"((uint32_t)deadline),
			 "d"((uint32_t)(deadline >> 32)));
	wait_for(&count_timer, before + 1);
	lapic_write(APIC_LVTT, V_TIMER | LVT_MASKED);
	printf("apic tsc-deadline: fired\n");
}

static void test_priority(void)
{
	/* Nesting: a one-shot whose handler sends the two IPIs. */
	nest_test = 1;
	uint32_t before = count_timer;
	lapic_write(APIC_LVTT, V_TIMER);
	lapic_write(APIC_TMICT, 1000);
	wait_for(&count_timer, before + 1);
	wait_for(&count_low, 1);
	/* TPR: class 2 blocked, the IPI waits in IRR until TPR drops. */
	lapic_write(APIC_TPR, 0x20);
	self_ipi(V_TPR);
	open_window();
	check(count_tpr == 0, "TPR 0x20 holds back vector 0x26");
	check((lapic_read(APIC_IRR + 0x10 * (V_TPR >> 5)) >> (V_TPR & 31)) & 1,
	      "the held-back vector is in IRR");
	lapic_write(APIC_TPR, 0);
	open_window();
	check(count_tpr == 1, "vector 0x26 delivered once TPR dropped");
}

static void test_pit_edge(long hz, long ticks)
{
	ioapic_route(2, V_PIT); /* edge, active high, fixed, physical */
	pit_start((unsigned)hz, 2);
	wait_for(&count_pit, (uint32_t)ticks);
	pit_stop();
	ioapic_route(2, V_PIT | LVT_MASKED);
	check(count_pit >= (uint32_t)ticks, "PIT interrupts through I/O APIC pin 2");
}

static void test_uart_level(long rounds)
{
	ioapic_route(COM1_IRQ, V_UART | (1u << 15)); /* level, active high */
	for (long r = 0; r < rounds; r++) {
		uint32_t before = count_uart;
		outb(COM1 + UART_IER, 0x02); /* THR empty: asserted at once */
		wait_for(&count_uart, before + 2);
		check(count_uart == before + 2, "level pin re-sent after EOI while asserted");
	}
	uint32_t entry = ioapic_read(0x10 + 2 * COM1_IRQ);
	check(!(entry & (1u << 14)), "remote IRR clear after the last EOI");
	/* Masked: the asserted source is not sent. */
	ioapic_route(COM1_IRQ, V_UART | (1u << 15) | LVT_MASKED);
	uint32_t before = count_uart;
	outb(COM1 + UART_IER, 0x02);
	open_window();
	check(count_uart == before, "a masked pin is not sent");
	inb(COM1 + UART_IIR);
	outb(COM1 + UART_IER, 0);
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	long oneshots = cmdline_get_int("oneshots=", 5);
	long count = cmdline_get_int("count=", 1000000);
	long periods = cmdline_get_int("periods=", 20);
	long hz = cmdline_get_int("hz=", 1000);
	long pitticks = cmdline_get_int("pitticks=", 10);
	long levels = cmdline_get_int("levels=", 3);
	if (count < 100)
		count = 100;
	printf("apic oneshots=%ld count=%ld periods=%ld hz=%ld pitticks=%ld levels=%ld\n",
	       oneshots, count, periods, hz, pitticks, levels);
	if (!has_cpuid_bit(3, 9)) {
		printf("apic FAIL: CPUID says there is no local APIC\n");
		return 1;
	}
	test_fw_cfg();
	map_apic_pages();
	isr_set_handler(V_TIMER, on_timer);
	isr_set_handler(V_LOW, on_low);
	isr_set_handler(V_HIGH, on_high);
	isr_set_handler(V_TPR, on_tpr);
	isr_set_handler(V_PIT, on_pit);
	isr_set_handler(V_UART, on_uart);

	uint32_t ver = lapic_read(APIC_VER);
	check((ver & 0xff) >= 0x10, "integrated APIC version");
	check(((ver >> 16) & 0xff) >= 4, "at least 5 LVT entries");
	check(lapic_read(APIC_ID) >> 24 == 0, "APIC ID 0");
	check(((ioapic_read(1) >> 16) & 0xff) == 23, "I/O APIC has 24 pins");
	lapic_write(APIC_SVR, 0x100 | V_SPUR);
	lapic_write(APIC_LINT0, LVT_MASKED | (7u << 8)); /* 8259 off: symmetric I/O */
	lapic_write(APIC_LVTERR, LVT_MASKED);
	lapic_write(APIC_TPR, 0);

	test_oneshot(oneshots, count);
	test_periodic(periods, count);
	test_tsc_deadline();
	test_priority();
	test_pit_edge(hz, pitticks);
	test_uart_level(levels);

	uint64_t ord = FNV_OFFSET;
	for (uint32_t i = 0; i < order_len; i++)
		ord = fnv_fold(ord, order[i]);
	printf("apic timer=%u pit=%u uart=%u low=%u high=%u tpr=%u\n", count_timer, count_pit,
	       count_uart, count_low, count_high, count_tpr);
	printf("apic events=%u order=0x%016lx hash=0x%016lx\n", events, ord, hash);
	return failures ? 1 : 0;
}
