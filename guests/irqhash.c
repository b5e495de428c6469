/*
 * irqhash: the record/replay stress guest.
 *
 * The PIT runs at `hz=` (default 1000) with interrupts enabled while the
 * guest runs `loops=` (default 3) rounds of exit-free work, each round made
 * of three kinds of loop, `iters=` (default 20000) iterations each:
 *   1. register compute: xorshift64 -- registers change every iteration;
 *   2. `addl $0x100, counter; jnc 1b` -- registers and RFLAGS repeat while
 *      memory changes (a register-only fingerprint cannot tell iterations
 *      apart);
 *   3. `rep stosb` over a `stos=`-byte buffer (default and max 65536).
 * The timer handler folds the interrupted RIP, RCX and the tick number into
 * an FNV-1a hash, so the final line depends on exactly where every interrupt
 * landed: a replay must reproduce it bit for bit.
 *
 * Output:  "irqhash work=0x..."  -- independent of interrupts (checks that
 *                                   interrupts never corrupt the work)
 *          "irqhash ticks=N hash=0x..."  -- depends on interrupt timing
 */
#include "rt.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull
#define STOS_MAX   65536

static volatile uint64_t ticks;
static volatile uint64_t irq_hash = FNV_OFFSET;

volatile uint32_t mem_counter;          /* target of the repeating-register loop */
static uint8_t stos_buf[STOS_MAX] __attribute__((aligned(4096)));

static uint64_t fnv_fold(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		h ^= v & 0xff;
		h *= FNV_PRIME;
		v >>= 8;
	}
	return h;
}

static void timer_tick(struct isr_frame *f)
{
	uint64_t t = ++ticks;
	uint64_t h = irq_hash;
	h = fnv_fold(h, f->rip);
	h = fnv_fold(h, f->rcx);
	h = fnv_fold(h, t);
	irq_hash = h;
}

static NOINLINE uint64_t work_regs(uint64_t x, uint64_t iters)
{
	uint64_t acc = 0;
	for (uint64_t i = 0; i < iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		acc += x;
	}
	return acc ^ x;
}

/* Exactly `iters` iterations: start so that the iters-th add carries out. */
static NOINLINE void work_mem(uint32_t iters)
{
	mem_counter = (uint32_t)(0u - iters * 0x100u);
	__asm__ volatile("1:\taddl $0x100, %0\n\tjnc 1b" : "+m"(mem_counter) : : "cc");
}

static NOINLINE void work_stos(uint8_t value, uint64_t n)
{
	void *p = stos_buf;
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(value) : "memory");
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	long hz = cmdline_get_int("hz=", 1000);
	long loops = cmdline_get_int("loops=", 3);
	long iters = cmdline_get_int("iters=", 20000);
	long stos = cmdline_get_int("stos=", STOS_MAX);
	if (hz < 19)
		hz = 19; /* slowest the 16-bit divisor allows */
	if (iters < 1)
		iters = 1;
	if (iters > 0xffffff)
		iters = 0xffffff; /* the memory loop's counter has 24 bits of room */
	if (stos < 1 || stos > STOS_MAX)
		stos = STOS_MAX;
	printf("irqhash hz=%ld loops=%ld iters=%ld stos=%ld\n", hz, loops, iters, stos);

	irq_set_handler(0, timer_tick);
	pit_start((unsigned)hz, 2);
	pic_unmask(0);

	uint64_t work = FNV_OFFSET;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	sti();
	for (long l = 0; l < loops; l++) {
		x = work_regs(x + (uint64_t)l, (uint64_t)iters);
		work = fnv_fold(work, x);
		work_mem((uint32_t)iters);
		work = fnv_fold(work, mem_counter);
		work_stos((uint8_t)(0x11 * (l + 1)), (uint64_t)stos);
		work = fnv_fold(work, stos_buf[0] | (uint64_t)stos_buf[stos - 1] << 8);
	}
	cli();
	pit_stop();
	pic_mask(0);

	printf("irqhash work=0x%016lx\n", work);
	printf("irqhash ticks=%lu hash=0x%016lx\n", ticks, irq_hash);
	return 0;
}
