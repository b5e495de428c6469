/*
 * flaky: a timer race that shows only when an interrupt arrives late.
 *
 * The timer handler and the main loop both add to `counter`.  The main loop's
 * update is a non-atomic read-modify-write (load, a few hundred instructions
 * of "work", store), which loses any tick the handler counted in between.  To
 * avoid the cost of masking interrupts, the loop reads the PIT first and takes
 * the unmasked fast path only when the next tick is "far enough" away (a
 * margin calibrated at start: `margin=` percent of the longest update it
 * measured).  That reasoning is the bug: a timer interrupt is not guaranteed
 * to arrive when the counter reloads.  When it is delivered late (an SMI, a
 * busy host), the counter already shows a fresh period while the previous
 * tick is still pending, and it lands inside the unmasked update.
 *
 * On a quiet machine interrupts arrive on time and the guest passes; under
 * `rrvmm record --chaos` (late timer answers) it fails often.  The lost update
 * is caught at the end: the counter must equal updates + ticks.
 *
 * Command line: hz= (1000) timer rate, ticks= (5) how many ticks to run for,
 * spin= (200) work iterations inside the racy update, margin= (300) percent.
 * Output: "flaky: hz=.. ticks=.. spin=.. margin=.. counts", then either
 * "flaky: ok updates=N ticks=N" (status 0) or
 * "PANIC: lost update: counter=N expected=N" (status 3).
 */
#include "rt.h"

#define CALIBRATION_ROUNDS 16

static volatile uint32_t counter;       /* shared by timer_tick and racy_add */
static volatile uint32_t ticks;
static volatile uint32_t fast_paths;    /* updates done unmasked */
static unsigned divisor;

static void timer_tick(struct isr_frame *f)
{
	(void)f;
	counter = counter + 1;
	ticks = ticks + 1;
}

/* The racy update: counter += 1 with `spin` iterations between load and store. */
static NOINLINE void racy_add(uint32_t spin)
{
	uint32_t v = counter;
	for (uint32_t i = 0; i < spin; i++)
		__asm__ volatile("" ::: "memory");
	counter = v + 1;
}

/* PIT counts from `a` down to `b`, across one reload at most. */
static uint32_t counts_between(uint16_t a, uint16_t b)
{
	return a >= b ? (uint32_t)(a - b) : (uint32_t)a + divisor - b;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	long hz = cmdline_get_int("hz=", 1000);
	long want_ticks = cmdline_get_int("ticks=", 5);
	long spin = cmdline_get_int("spin=", 200);
	long margin_pct = cmdline_get_int("margin=", 300);
	if (hz < 19)
		hz = 19;
	if (want_ticks < 1)
		want_ticks = 1;
	if (spin < 0)
		spin = 0;

	irq_set_handler(0, timer_tick);
	divisor = pit_start((unsigned)hz, 2);
	pic_unmask(0);

	/* Calibrate with interrupts masked: how many PIT counts a latch + update takes. */
	uint32_t longest = 0;
	uint32_t updates = 0;
	for (int r = 0; r < CALIBRATION_ROUNDS; r++) {
		cli();
		uint16_t c0 = pit_latch_count();
		racy_add((uint32_t)spin);
		uint16_t c1 = pit_latch_count();
		sti();
		updates++;
		uint32_t d = counts_between(c0, c1);
		if (d > longest)
			longest = d;
	}
	uint32_t margin = longest * (uint32_t)margin_pct / 100 + 2;
	printf("flaky: hz=%ld ticks=%ld spin=%ld margin=%u counts\n", hz, want_ticks, spin,
	       margin);

	while (ticks < (uint32_t)want_ticks) {
		uint16_t c = pit_latch_count();
		if (c > margin) {
			fast_paths++;
			racy_add((uint32_t)spin); /* "no tick before we are done" */
		} else {
			cli();
			racy_add((uint32_t)spin);
			sti();
		}
		updates++;
	}
	cli();
	pit_stop();
	pic_mask(0);

	uint32_t expected = updates + ticks;
	if (counter != expected) {
		printf("PANIC: lost update: counter=%u expected=%u\n", counter, expected);
		return 3;
	}
	printf("flaky: ok updates=%u ticks=%u fast=%u\n", updates, ticks, fast_paths);
	return 0;
}
