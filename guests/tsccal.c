/*
 * tsccal: measures the TSC against PIT channel 2, the way Linux's
 * quick_pit_calibrate() does: channel 2 gated on through port 0x61, mode 0
 * from 0xffff, the MSB of the count polled (two reads of port 0x42) with a
 * TSC read after each poll. It prints "tsc NT pit NP polls NQ": the TSC ticks
 * between the first read of MSB 0xfe and the first read of MSB 0xfe-steps,
 * the PIT clocks between them (256 per MSB step) and the polls made, so the
 * host can work out the TSC frequency (NT * 1193182 / NP Hz). Exit 0, or 1
 * if the PIT never moved.
 */
#include "rt.h"

#define PIT_CH2   0x42
#define PIT_CMD   0x43
#define PORT_B    0x61
#define STEPS     4       /* MSB steps to time: 1024 PIT clocks, ~858 us */
#define MAX_POLLS 2000000 /* give up if the MSB never changes */

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static uint8_t msb(void)
{
	inb(PIT_CH2); /* LSB, ignored */
	return inb(PIT_CH2);
}

static unsigned long polls;

/* Poll until the MSB reads `want`; the TSC right after that read, or 0. */
static uint64_t wait_msb(uint8_t want)
{
	for (; polls < MAX_POLLS; polls++)
		if (msb() == want)
			return rdtsc();
	return 0;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01); /* gate 2 on, speaker off */
	outb(PIT_CMD, 0xb0);                        /* ch2, lo/hi, mode 0, binary */
	outb(PIT_CH2, 0xff);
	outb(PIT_CH2, 0xff);
	uint64_t t0 = wait_msb(0xfe);
	uint64_t t1 = t0 ? wait_msb(0xfe - STEPS) : 0;
	if (!t1) {
		printf("pit channel 2 did not count\n");
		return 1;
	}
	printf("tsc %lu pit %u polls %lu\n", (unsigned long)(t1 - t0), STEPS * 256, polls);
	return 0;
}
