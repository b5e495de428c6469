/*
 * echo: line echo over interrupt-driven serial RX.  Prints each line back
 * as "> <line>" until it reads the line "quit"; then "bye" and exit 0.
 */
#include "rt.h"

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	char line[256];

	serial_rx_irq_enable();
	printf("echo: type lines, \"quit\" ends\n");
	for (;;) {
		serial_readline(line, sizeof(line));
		if (strcmp(line, "quit") == 0)
			break;
		printf("> %s\n", line);
	}
	outb(COM1 + UART_IER, 0);
	printf("bye\n");
	return 0;
}
