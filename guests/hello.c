/*
 * hello: the smallest useful guest.  Prints "hello, world" and what the
 * multiboot loader told us, then exits with cmdline `exit=N` (default 0).
 * Also linked with the a.out-kludge header as hello-aout.mb.
 */
#include "rt.h"

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	printf("hello, world\n");
	printf("multiboot magic=0x%08x info=0x%x flags=0x%x\n", magic, mbinfo_phys,
	       boot.flags);
	printf("cmdline: \"%s\"\n", boot.cmdline);
	if (boot.has_mem)
		printf("mem_lower=%u KiB mem_upper=%u KiB\n", boot.mem_lower,
		       boot.mem_upper);
	else
		printf("no memory info\n");
	if (boot.has_mmap) {
		printf("mmap entries: %u\n", boot.mmap_count);
		for (unsigned i = 0; i < boot.mmap_count; i++) {
			uint64_t addr, len;
			uint32_t type;
			mb_mmap_entry(i, &addr, &len, &type);
			printf("  mmap[%u] base=0x%016lx len=0x%016lx type=%u\n", i,
			       addr, len, type);
		}
	} else {
		printf("mmap entries: none\n");
	}
	int status = (int)cmdline_get_int("exit=", 0);
	printf("exit status %d\n", status);
	return status;
}
