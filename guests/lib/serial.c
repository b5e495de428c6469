/* COM1 16550A: polled TX, interrupt-driven RX into a ring buffer. */
#include "rt.h"

#define RX_RING_SIZE 1024 /* power of two */

static volatile uint8_t rx_ring[RX_RING_SIZE];
static volatile uint32_t rx_head; /* written by the IRQ handler */
static volatile uint32_t rx_tail; /* written by the consumer */
volatile uint32_t serial_rx_dropped;

void serial_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, UART_LCR_DLAB);
	outb(COM1 + UART_DLL, 1); /* 115200 baud */
	outb(COM1 + UART_DLM, 0);
	outb(COM1 + UART_LCR, 0x03); /* 8N1, DLAB off */
	outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
}

void serial_putc(char c)
{
	while (!(inb(COM1 + UART_LSR) & UART_LSR_THRE))
		;
	outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		serial_putc(s[i]);
}

void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

void serial_flush(void)
{
	while (!(inb(COM1 + UART_LSR) & UART_LSR_TEMT))
		;
}

static void rx_push(uint8_t b)
{
	uint32_t h = rx_head;
	if (h - rx_tail >= RX_RING_SIZE) {
		serial_rx_dropped++;
		return;
	}
	rx_ring[h & (RX_RING_SIZE - 1)] = b;
	rx_head = h + 1;
}

void serial_rx_poll_to_ring(void)
{
	while (inb(COM1 + UART_LSR) & UART_LSR_DR)
		rx_push(inb(COM1 + UART_RBR));
}

static void serial_irq(struct isr_frame *f)
{
	(void)f;
	/* Reading RBR until LSR.DR is clear drops the UART's IRQ line, so the
	 * next byte makes a new edge at the (edge-triggered) PIC. */
	serial_rx_poll_to_ring();
}

void serial_rx_irq_enable(void)
{
	irq_set_handler(COM1_IRQ, serial_irq);
	outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
	pic_unmask(COM1_IRQ);
	outb(COM1 + UART_IER, UART_IER_RDI);
}

int serial_getc_nowait(void)
{
	uint32_t t = rx_tail;
	if (t == rx_head)
		return -1;
	uint8_t b = rx_ring[t & (RX_RING_SIZE - 1)];
	rx_tail = t + 1;
	return b;
}

int serial_getc(void)
{
	int c;
	while ((c = serial_getc_nowait()) < 0)
		cpu_wait();
	return c;
}

size_t serial_readline(char *buf, size_t size)
{
	static int last_was_cr;
	size_t n = 0;
	for (;;) {
		int c = serial_getc();
		if (c == '\n' && last_was_cr) { /* second half of "\r\n" */
			last_was_cr = 0;
			continue;
		}
		last_was_cr = (c == '\r');
		if (c == '\n' || c == '\r')
			break;
		if (n + 1 < size)
			buf[n++] = (char)c;
	}
	if (size)
		buf[n] = 0;
	return n;
}
