/*
 * triplefault: loads an empty IDT (limit 0) and executes int3.  Vector 3 is
 * beyond the IDT limit -> #GP, which is beyond it too -> #DF -> triple fault,
 * i.e. a shutdown/reset.  Never exits normally (exit 1 if it somehow does).
 */
#include "rt.h"

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty_idt = {0, 0};

	printf("about to triple fault\n");
	serial_flush();
	__asm__ volatile("lidt %0\n\tint3" : : "m"(empty_idt) : "memory");
	printf("still running after the triple fault?!\n");
	return 1;
}
