/*
 * hotguard: a corruption late in a long run, on a page written at every tick.
 *
 * The shape reverse debugging is slow on: the timer ticks at `hz=` (1000) and
 * its handler writes `ticks` and `tick_log[ticks % LOG]`, which share a page
 * with `guard` (.data, source order kept by -fno-toplevel-reorder).  Between
 * ticks kmain computes without exits (a xorshift over a stack buffer), so on
 * KVM the timer needs forced exits.  At tick `at=` (140), `stale_store()` writes
 * tick_log[LOG] -- which is `guard` -- with the tick number; at tick `ticks=`
 * (150) kmain checks the guard and panic()s, exit status 3.
 *
 * For gdb:  break panic / continue / watch guard / reverse-continue
 * stops in stale_store, at the store (guard still GUARD_MAGIC).
 */
#include "rt.h"

#define LOG         16
#define GUARD_MAGIC 0x600df00du

/* Order matters: guard right after tick_log, all on one page of .data
 * (initialised, or placed there, so that none of them moves to .bss). */
uint32_t tick_log[LOG] = {0xffffffffu};
uint32_t guard = GUARD_MAGIC;
__attribute__((section(".data"))) volatile uint32_t ticks;
__attribute__((section(".data"))) uint64_t work;

NOINLINE NORETURN void panic(const char *msg);

static void timer_tick(struct isr_frame *f)
{
	(void)f;
	uint32_t t = ticks + 1;
	ticks = t;
	tick_log[t % LOG] = t;
}

/* The bug: a slot index from before the log shrank, one past its end. */
NOINLINE void stale_store(uint32_t slot, uint32_t value)
{
	tick_log[slot] = value;
}

/* Compute until the tick counter moves; no exits. */
NOINLINE uint64_t spin_until_tick(uint32_t seen)
{
	uint64_t x = work | 1;
	uint64_t buf[8] = {0};
	unsigned i = 0;
	while (ticks == seen) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i++ & 7] += x;
	}
	return x ^ buf[0] ^ buf[7];
}

NOINLINE NORETURN void panic(const char *msg)
{
	printf("PANIC: %s\n", msg);
	rt_exit(3);
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	uint32_t hz = (uint32_t)cmdline_get_int("hz=", 1000);
	uint32_t at = (uint32_t)cmdline_get_int("at=", 140);
	uint32_t total = (uint32_t)cmdline_get_int("ticks=", 150);
	if ((uintptr_t)&guard != (uintptr_t)&tick_log[LOG] ||
	    ((uintptr_t)&ticks >> 12) != ((uintptr_t)&guard >> 12)) {
		printf("hotguard: layout is wrong (guard not after tick_log on its page)\n");
		return 2;
	}
	printf("hotguard hz=%u at=%u ticks=%u\n", hz, at, total);
	irq_set_handler(0, timer_tick);
	pit_start(hz, 2);
	pic_unmask(0);
	sti();
	uint32_t seen = 0;
	int stored = 0;
	while (seen < total) {
		work += spin_until_tick(seen);
		seen = ticks;
		if (seen >= at && !stored) {
			stale_store(LOG, seen);
			stored = 1;
		}
	}
	cli();
	pit_stop();
	pic_mask(0);
	printf("hotguard: %u ticks, guard=0x%08x\n", seen, guard);
	if (guard != GUARD_MAGIC)
		panic("guard corrupted");
	return 0;
}
