/*
 * uart: exercises the 16550A on COM1.
 *   - LCR and divisor latch read back
 *   - scratch register
 *   - FIFO detection through IIR (FCR=0x07: expect IIR bits 7:6 = 11)
 *   - loopback mode: modem-status lines follow MCR, data comes back in RBR
 * then RX by interrupt: prints "ready", reads `lines=N` (default 1) lines
 * and prints "got: <line>" for each.  Exit 0, or 1 if a check failed.
 */
#include "rt.h"

static int failures;

static void check(int ok, const char *what)
{
	printf("%s %s\n", what, ok ? "ok" : "FAILED");
	if (!ok)
		failures++;
}

static int loopback_byte(uint8_t b)
{
	outb(COM1 + UART_THR, b);
	for (int i = 0; i < 1000; i++) {
		if (inb(COM1 + UART_LSR) & UART_LSR_DR)
			return inb(COM1 + UART_RBR) == b;
	}
	return 0;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	char line[256];
	long lines = cmdline_get_int("lines=", 1);

	printf("uart test\n");
	/* Keep any byte the host sent before we started: the FIFO and loopback
	 * tests below would discard it. */
	serial_rx_poll_to_ring();

	/* LCR and divisor latch (serial_init set 115200 8N1). */
	int ok = inb(COM1 + UART_LCR) == 0x03;
	outb(COM1 + UART_LCR, 0x83);
	ok = ok && inb(COM1 + UART_DLL) == 1 && inb(COM1 + UART_DLM) == 0;
	outb(COM1 + UART_LCR, 0x03);
	ok = ok && inb(COM1 + UART_IER) == 0;
	check(ok, "lcr/dlab");

	ok = 1;
	static const uint8_t pat[] = {0x55, 0xaa, 0x00, 0xff, 0x5a};
	for (unsigned i = 0; i < sizeof(pat); i++) {
		outb(COM1 + UART_SCR, pat[i]);
		ok = ok && inb(COM1 + UART_SCR) == pat[i];
	}
	check(ok, "scratch");

	uint8_t lsr = inb(COM1 + UART_LSR);
	check((lsr & (UART_LSR_THRE | UART_LSR_TEMT)) == (UART_LSR_THRE | UART_LSR_TEMT),
	      "lsr idle");

	/* FIFO: enable + clear both, trigger level 1 byte. */
	outb(COM1 + UART_FCR, 0x07);
	uint8_t iir = inb(COM1 + UART_IIR);
	const char *kind = (iir & 0xc0) == 0xc0 ? "16550A"
			   : (iir & 0xc0) == 0x80 ? "16550 (broken FIFO)"
						  : "none (8250/16450)";
	printf("fifo: %s\n", kind);
	check((iir & 0xcf) == 0xc1, "iir fifo+idle");

	/* Loopback: MSR[7:4] = DCD RI DSR CTS follow MCR OUT2 OUT1 DTR RTS. */
	outb(COM1 + UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2 | UART_MCR_RTS);
	uint8_t msr1 = inb(COM1 + UART_MSR) & 0xf0;
	outb(COM1 + UART_MCR, UART_MCR_LOOP | 0x0f);
	uint8_t msr2 = inb(COM1 + UART_MSR) & 0xf0;
	outb(COM1 + UART_MCR, UART_MCR_LOOP);
	uint8_t msr3 = inb(COM1 + UART_MSR) & 0xf0;
	ok = 1;
	static const uint8_t data[] = {0x00, 0x55, 0xaa, 0xff, 'L', '\n'};
	for (unsigned i = 0; i < sizeof(data); i++)
		ok = ok && loopback_byte(data[i]);
	outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
	check(msr1 == 0x90 && msr2 == 0xf0 && msr3 == 0x00, "loopback msr");
	check(ok, "loopback data");

	serial_rx_irq_enable();
	printf("ready\n");
	for (long i = 0; i < lines; i++) {
		serial_readline(line, sizeof(line));
		printf("got: %s\n", line);
	}
	outb(COM1 + UART_IER, 0);
	if (failures)
		printf("uart: %d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
