/*
 * demo: the built-in guest of `rrvmm run` / `rrvmm record`.
 *
 * Banner, memory size and command line from multiboot; five timer ticks at
 * 100 Hz ("tick 1".."tick 5"); then one second (100 ticks) of echoing serial
 * input, interrupt-driven; then "bye" and exit 0.  With no input the output
 * is the same on every run: only *when* lines appear depends on time.
 */
#include "rt.h"

#define HZ 100
#define BANNER_TICKS 5
#define ECHO_TICKS 100

static volatile uint32_t ticks;

static void timer_tick(struct isr_frame *f)
{
	(void)f;
	ticks++;
}

static void wait_ticks(uint32_t until)
{
	while (ticks < until)
		cpu_wait();
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	printf("rrvmm demo guest: hello from long mode\n");
	if (boot.has_mem)
		printf("memory: %u MiB (mem_lower=%u KiB, mem_upper=%u KiB)\n",
		       (boot.mem_upper + 1024 + 1023) / 1024, boot.mem_lower, boot.mem_upper);
	else
		printf("memory: unknown (no multiboot memory info)\n");
	printf("cmdline: \"%s\"\n", boot.cmdline);

	irq_set_handler(0, timer_tick);
	pit_start(HZ, 2);
	pic_unmask(0);
	for (uint32_t t = 1; t <= BANNER_TICKS; t++) {
		wait_ticks(t);
		printf("tick %u\n", t);
	}

	printf("echoing serial input for 1s\n");
	serial_rx_irq_enable();
	uint32_t end = ticks + ECHO_TICKS;
	int last = '\n';
	while (ticks < end) {
		int c;
		while ((c = serial_getc_nowait()) >= 0) {
			if (c == '\r')
				c = '\n';
			serial_putc((char)c);
			last = c;
		}
		cpu_wait();
	}
	pit_stop();
	pic_mask(0);
	outb(COM1 + UART_IER, 0);
	if (last != '\n')
		serial_putc('\n');
	printf("bye\n");
	return 0;
}
