/*
 * timer: PIC + PIT.  Programs channel 0 at 100 Hz (mode 2), checks that
 * latched and read-back counts are plausible (in range, decreasing), counts
 * `ticks=` (default 20) ticks with sti;hlt and prints "ticks=20".  Exit 0, or 1 on a
 * failed check.
 */
#include "rt.h"

#define HZ 100
#define TICKS 20

static volatile uint32_t ticks;
static uint32_t ticks_wanted = TICKS;

static void timer_tick(struct isr_frame *f)
{
	(void)f;
	ticks++;
}

/* Spin longer than one PIT clock (838 ns) on the software CPU, whose port
 * accesses take no guest time (guest time is its instruction count, 1 ns each),
 * so two reads back to back may see one count; and far shorter than the 10 ms
 * period on KVM's instruction emulator (~2 MIPS), where a longer spin made
 * every pair straddle a reload. 300 turns: ~1.5 us on soft, ~1 ms emulated. */
static void spin(void)
{
	for (volatile int i = 0; i < 300; i++)
		;
}

/* Two reads a few microseconds apart: both within (0, divisor], and at least
 * one of a few pairs strictly decreasing (a pair may straddle a reload). */
static int counts_plausible(unsigned divisor, int readback)
{
	int decreasing = 0;
	for (int tries = 0; tries < 4; tries++) {
		uint16_t a, b;
		uint8_t st = 0x34, st2 = 0x34;
		if (readback) {
			pit_readback(&st, &a);
			spin();
			pit_readback(&st2, &b);
		} else {
			a = pit_latch_count();
			spin();
			b = pit_latch_count();
		}
		/* status: access lobyte/hibyte (11), mode 2 (010), binary. */
		if ((st & 0x3f) != 0x34 || (st2 & 0x3f) != 0x34)
			return 0;
		if (a > divisor || b > divisor)
			return 0;
		if (b < a)
			decreasing = 1;
	}
	return decreasing;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	int failures = 0;
	long wanted = cmdline_get_int("ticks=", TICKS);
	if (wanted > 0)
		ticks_wanted = (uint32_t)wanted;

	irq_set_handler(0, timer_tick);
	unsigned divisor = pit_start(HZ, 2);
	printf("pit: channel 0 mode 2, divisor %u (%u Hz)\n", divisor, HZ);

	int ok = counts_plausible(divisor, 0);
	printf("pit latch %s\n", ok ? "ok" : "FAILED");
	failures += !ok;
	ok = counts_plausible(divisor, 1);
	printf("pit read-back %s\n", ok ? "ok" : "FAILED");
	failures += !ok;

	pic_unmask(0);
	while (ticks < ticks_wanted)
		cpu_wait();
	pit_stop();
	pic_mask(0);
	printf("ticks=%u\n", ticks);
	return failures ? 1 : 0;
}
