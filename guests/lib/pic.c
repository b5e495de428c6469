/* 8259A PIC pair and 8254 PIT channel 0. */
#include "rt.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xa0
#define PIC2_DATA 0xa1
#define PIC_EOI   0x20
#define OCW3_READ_ISR 0x0b

#define PIT_CH0 0x40
#define PIT_CMD 0x43

static uint16_t pic_masks = 0xffff; /* bit n = IRQ n masked */

static void pic_write_masks(void)
{
	outb(PIC1_DATA, (uint8_t)pic_masks);
	outb(PIC2_DATA, (uint8_t)(pic_masks >> 8));
}

void pic_init(void)
{
	outb(PIC1_CMD, 0x11);  /* ICW1: edge, cascade, ICW4 needed */
	outb(PIC2_CMD, 0x11);
	outb(PIC1_DATA, IRQ_BASE);     /* ICW2: vector base 0x20 */
	outb(PIC2_DATA, IRQ_BASE + 8); /* 0x28 */
	outb(PIC1_DATA, 0x04);  /* ICW3: slave on IRQ 2 */
	outb(PIC2_DATA, 0x02);  /* ICW3: slave identity 2 */
	outb(PIC1_DATA, 0x01);  /* ICW4: 8086 mode, normal EOI */
	outb(PIC2_DATA, 0x01);
	pic_masks = 0xffff;
	pic_write_masks();
}

void pic_mask(unsigned irq)
{
	pic_masks |= (uint16_t)(1u << irq);
	pic_write_masks();
}

void pic_unmask(unsigned irq)
{
	pic_masks &= (uint16_t)~(1u << irq);
	if (irq >= 8)
		pic_masks &= (uint16_t)~(1u << 2);
	pic_write_masks();
}

void pic_eoi(unsigned irq)
{
	if (irq >= 8)
		outb(PIC2_CMD, PIC_EOI);
	outb(PIC1_CMD, PIC_EOI);
}

int pic_in_service(unsigned irq)
{
	uint16_t port = irq >= 8 ? PIC2_CMD : PIC1_CMD;
	outb(port, OCW3_READ_ISR);
	return (inb(port) >> (irq & 7)) & 1;
}

unsigned pit_start_divisor(unsigned divisor, unsigned mode)
{
	if (divisor < 2)
		divisor = 2;
	if (divisor > 65535)
		divisor = 65535;
	/* channel 0, access lobyte/hibyte, mode, binary */
	outb(PIT_CMD, (uint8_t)(0x30 | ((mode & 7) << 1)));
	outb(PIT_CH0, (uint8_t)divisor);
	outb(PIT_CH0, (uint8_t)(divisor >> 8));
	return divisor;
}

unsigned pit_start(unsigned hz, unsigned mode)
{
	if (hz == 0)
		hz = 1;
	return pit_start_divisor((PIT_HZ + hz / 2) / hz, mode);
}

void pit_stop(void)
{
	/* Mode 0 control word: OUT goes low and the counter waits for a count
	 * that never comes, so no more edges on IRQ 0. */
	outb(PIT_CMD, 0x30);
}

uint16_t pit_latch_count(void)
{
	outb(PIT_CMD, 0x00); /* counter latch, channel 0 */
	uint8_t lo = inb(PIT_CH0);
	uint8_t hi = inb(PIT_CH0);
	return (uint16_t)(lo | hi << 8);
}

void pit_readback(uint8_t *status, uint16_t *count)
{
	outb(PIT_CMD, 0xc2); /* read-back: latch count and status, channel 0 */
	*status = inb(PIT_CH0);
	uint8_t lo = inb(PIT_CH0);
	uint8_t hi = inb(PIT_CH0);
	*count = (uint16_t)(lo | hi << 8);
}
