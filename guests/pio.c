/*
 * pio: port-I/O exit benchmark.  `n=` (default 100000) `outb` to port 0x80
 * (the POST/delay port, ignored by the machine) in a tight loop; exit 0.
 */
#include "rt.h"

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	long n = cmdline_get_int("n=", 100000);
	printf("pio n=%ld\n", n);
	for (long i = 0; i < n; i++)
		outb(0x80, (uint8_t)i);
	printf("pio done\n");
	return 0;
}
