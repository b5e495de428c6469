/*
 * compute: pure CPU work for benchmarks -- no exits, no interrupts between
 * the two prints.  `n=` (default 1000000) iterations of an xorshift64 +
 * FNV-style mixing loop (14 instructions each at -O2).  Prints the result,
 * which depends only on n, and exits 0.
 */
#include "rt.h"

static NOINLINE uint64_t compute(uint64_t n)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint64_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		h = (h ^ x) * 0x100000001b3ull;
	}
	return h;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	long n = cmdline_get_int("n=", 1000000);
	if (n < 0)
		n = 0;
	printf("compute n=%ld\n", n);
	uint64_t r = compute((uint64_t)n);
	printf("compute result=0x%016lx\n", r);
	return 0;
}
