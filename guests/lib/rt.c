/* Runtime start-up, exit, and the string functions GCC may call. */
#include "rt.h"

void mb_parse(uint32_t magic, uint32_t mbinfo_phys);
NORETURN void rt_start(uint32_t magic, uint32_t mbinfo_phys);

void rt_init(uint32_t magic, uint32_t mbinfo_phys)
{
	serial_init();
	idt_init();
	pic_init();
	mb_parse(magic, mbinfo_phys);
	if (magic != MULTIBOOT_BOOTLOADER_MAGIC)
		printf("rt: warning: bad multiboot magic 0x%x\n", magic);
}

/* Called from boot.S with the registers the loader gave us. */
NORETURN void rt_start(uint32_t magic, uint32_t mbinfo_phys)
{
	rt_init(magic, mbinfo_phys);
	rt_exit(kmain(magic, mbinfo_phys));
}

NORETURN void rt_exit(int status)
{
	cli();
	serial_flush();
	outb(DEBUG_EXIT_PORT, (uint8_t)status);
	/* Still here: there is no isa-debug-exit device. */
	printf("rt: exit(%d): port 0x%x did not stop the machine\n", status,
	       DEBUG_EXIT_PORT);
	serial_flush();
	outb(DEBUG_EXIT_PORT, EXIT_NO_EXIT_DEVICE);
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* rep movsb/stosb so that GCC cannot turn these loops back into calls. */
void *memset(void *d, int c, size_t n)
{
	void *p = d;
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *p = d;
	__asm__ volatile("rep movsb" : "+D"(p), "+S"(s), "+c"(n) : : "memory");
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	if ((uintptr_t)d <= (uintptr_t)s || (uintptr_t)d >= (uintptr_t)s + n)
		return memcpy(d, s, n);
	/* Overlapping, destination above source: copy backwards. */
	void *pd = (char *)d + n - 1;
	const void *ps = (const char *)s + n - 1;
	__asm__ volatile("std; rep movsb; cld"
			 : "+D"(pd), "+S"(ps), "+c"(n) : : "memory");
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			return 0;
	}
	return 0;
}
