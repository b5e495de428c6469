/*
 * timerbench: N timer interrupts from the PIT through the 8259 or from the
 * local APIC timer (periodic), for bench/apic_timer.py.
 *
 *   src=pic|lapic (default pic)   hz= (default 1000)   ticks= (default 200)
 *   busy=0|1: wait with sti;hlt (0, default) or in an exit-free loop (1)
 *
 * The LAPIC source needs `--apic on`.  Prints "timerbench src=... ticks=N".
 */
#include "rt.h"

#define LAPIC_BASE 0xfee00000ul
#define V_LAPIC    0x1b /* outside 32-47: the runtime EOIs the 8259 for those */

static volatile uint32_t ticks;
static uint64_t pd_high[512] __attribute__((aligned(4096)));
extern uint64_t pdpt[512];

static void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(LAPIC_BASE + reg) = v;
}

static void on_pit(struct isr_frame *f)
{
	(void)f;
	ticks++;
}

static void on_lapic(struct isr_frame *f)
{
	(void)f;
	ticks++;
	lapic_write(0xb0, 0); /* EOI */
}

static void lapic_start(long hz)
{
	pd_high[(LAPIC_BASE - 0xc0000000ul) >> 21] = (LAPIC_BASE & ~0x1ffffful) | 0x9b;
	pdpt[3] = (uint64_t)(uintptr_t)pd_high | 0x3;
	__asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
	isr_set_handler(V_LAPIC, on_lapic);
	lapic_write(0xf0, 0x1ff);               /* SVR: enabled */
	lapic_write(0x3e0, 0xb);                /* divide by 1: 1 ns per count */
	lapic_write(0x320, V_LAPIC | (1u << 17)); /* periodic */
	lapic_write(0x380, (uint32_t)(1000000000l / hz));
}

static void lapic_stop(void)
{
	lapic_write(0x320, V_LAPIC | (1u << 16));
	lapic_write(0x380, 0);
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	char src[8] = "pic";
	cmdline_get_str("src=", src, sizeof(src));
	long hz = cmdline_get_int("hz=", 1000);
	long want = cmdline_get_int("ticks=", 200);
	long busy = cmdline_get_int("busy=", 0);
	int lapic = strcmp(src, "lapic") == 0;
	if (hz < 19)
		hz = 19;
	if (lapic) {
		lapic_start(hz);
	} else {
		irq_set_handler(0, on_pit);
		pit_start((unsigned)hz, 2);
		pic_unmask(0);
	}
	if (busy) {
		sti();
		while (ticks < (uint32_t)want)
			__asm__ volatile("pause");
		cli();
	} else {
		while (ticks < (uint32_t)want)
			__asm__ volatile("sti; hlt; cli" : : : "memory");
	}
	if (lapic)
		lapic_stop();
	else
		pit_stop();
	printf("timerbench src=%s ticks=%u\n", lapic ? "lapic" : "pic", ticks);
	return 0;
}
