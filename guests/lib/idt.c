/* IDT for vectors 0-47 and the C side of interrupt dispatch. */
#include "rt.h"

struct idt_gate {
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t ist;
	uint8_t type_attr;
	uint16_t offset_mid;
	uint32_t offset_hi;
	uint32_t reserved;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

extern const uint64_t isr_stub_table[IDT_VECTORS];

static struct idt_gate idt[IDT_VECTORS] __attribute__((aligned(16)));
static isr_handler_t handlers[IDT_VECTORS];
volatile uint32_t spurious_irqs;

static const char *const exception_names[32] = {
	"#DE divide error", "#DB debug", "NMI", "#BP breakpoint",
	"#OF overflow", "#BR bound range", "#UD invalid opcode", "#NM no FPU",
	"#DF double fault", "coprocessor overrun", "#TS invalid TSS",
	"#NP segment not present", "#SS stack fault", "#GP general protection",
	"#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check",
	"#MC machine check", "#XM SIMD error", "#VE virtualization",
	"#CP control protection", "reserved 22", "reserved 23", "reserved 24",
	"reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
	"#VC VMM communication", "#SX security", "reserved 31",
};

void idt_init(void)
{
	for (unsigned v = 0; v < IDT_VECTORS; v++) {
		uint64_t a = isr_stub_table[v];
		idt[v].offset_lo = (uint16_t)a;
		idt[v].selector = 0x08;
		idt[v].ist = 0;
		idt[v].type_attr = 0x8E; /* present, DPL 0, 64-bit interrupt gate */
		idt[v].offset_mid = (uint16_t)(a >> 16);
		idt[v].offset_hi = (uint32_t)(a >> 32);
		idt[v].reserved = 0;
	}
	struct idt_ptr p = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};
	__asm__ volatile("lidt %0" : : "m"(p));
}

void isr_set_handler(unsigned vector, isr_handler_t h)
{
	if (vector < IDT_VECTORS)
		handlers[vector] = h;
}

void irq_set_handler(unsigned irq, isr_handler_t h)
{
	isr_set_handler(IRQ_BASE + irq, h);
}

void isr_dispatch(uint64_t vector, uint64_t error, uint64_t rip, struct isr_frame *f)
{
	if (vector >= IRQ_BASE && vector < IRQ_BASE + 16) {
		unsigned irq = (unsigned)(vector - IRQ_BASE);
		if ((irq == 7 || irq == 15) && !pic_in_service(irq)) {
			/* Spurious: no EOI for it (but the master did see IRQ 2). */
			spurious_irqs++;
			if (irq == 15)
				pic_eoi(2);
			return;
		}
		if (handlers[vector])
			handlers[vector](f);
		else
			spurious_irqs++;
		pic_eoi(irq);
		return;
	}
	if (vector < IDT_VECTORS && handlers[vector]) {
		handlers[vector](f);
		return;
	}
	printf("unhandled exception %lu (%s) error=0x%lx rip=0x%lx rsp=0x%lx",
	       vector, vector < 32 ? exception_names[vector] : "?", error, rip, f->rsp);
	if (vector == 14)
		printf(" cr2=0x%lx", read_cr2());
	printf("\n");
	rt_exit(EXIT_UNHANDLED_EXCEPTION);
}
