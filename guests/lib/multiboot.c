/* Multiboot info parsing and command-line helpers. */
#include "rt.h"

#define CMDLINE_MAX 1024

struct boot_info boot;
static char cmdline_copy[CMDLINE_MAX];

void mb_parse(uint32_t magic, uint32_t mbinfo_phys);

void mb_parse(uint32_t magic, uint32_t mbinfo_phys)
{
	boot.magic = magic;
	boot.cmdline = cmdline_copy;
	if (magic != MULTIBOOT_BOOTLOADER_MAGIC || mbinfo_phys == 0)
		return;
	const struct mb_info *mbi = (const struct mb_info *)(uintptr_t)mbinfo_phys;
	boot.mbi = mbi;
	boot.flags = mbi->flags;
	if (mbi->flags & MB_INFO_MEMORY) {
		boot.has_mem = 1;
		boot.mem_lower = mbi->mem_lower;
		boot.mem_upper = mbi->mem_upper;
	}
	if ((mbi->flags & MB_INFO_CMDLINE) && mbi->cmdline) {
		const char *src = (const char *)(uintptr_t)mbi->cmdline;
		size_t i;
		for (i = 0; i + 1 < CMDLINE_MAX && src[i]; i++)
			cmdline_copy[i] = src[i];
		cmdline_copy[i] = 0;
		boot.has_cmdline = 1;
	}
	if (mbi->flags & MB_INFO_MMAP) {
		boot.has_mmap = 1;
		uint64_t addr, len;
		uint32_t type;
		unsigned n = 0;
		while (mb_mmap_entry(n, &addr, &len, &type))
			n++;
		boot.mmap_count = n;
	}
}

int mb_mmap_entry(unsigned i, uint64_t *addr, uint64_t *len, uint32_t *type)
{
	const struct mb_info *mbi = boot.mbi;
	if (!mbi || !(mbi->flags & MB_INFO_MMAP))
		return 0;
	uintptr_t p = mbi->mmap_addr;
	uintptr_t end = p + mbi->mmap_length;
	for (unsigned k = 0; p + sizeof(struct mb_mmap_entry) <= end; k++) {
		const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)p;
		if (k == i) {
			*addr = e->addr;
			*len = e->len;
			*type = e->type;
			return 1;
		}
		if (e->size == 0)
			break;
		p += e->size + 4;
	}
	return 0;
}

/* Start of the value for `key`, or NULL. */
static const char *find_key(const char *key)
{
	const char *s = boot.cmdline;
	size_t kl = strlen(key);
	for (size_t i = 0; s[i]; i++) {
		if ((i == 0 || s[i - 1] == ' ') && strncmp(s + i, key, kl) == 0)
			return s + i + kl;
	}
	return 0;
}

long cmdline_get_int(const char *key, long def)
{
	const char *p = find_key(key);
	if (!p)
		return def;
	int neg = 0;
	if (*p == '-') {
		neg = 1;
		p++;
	}
	unsigned base = 10;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	long v = 0;
	int digits = 0;
	for (;; p++, digits++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		v = v * (long)base + (long)d;
	}
	if (!digits)
		return def;
	return neg ? -v : v;
}

int cmdline_get_str(const char *key, char *buf, size_t size)
{
	const char *p = find_key(key);
	if (!p || !size)
		return 0;
	size_t n = 0;
	while (p[n] && p[n] != ' ' && n + 1 < size) {
		buf[n] = p[n];
		n++;
	}
	buf[n] = 0;
	return 1;
}
