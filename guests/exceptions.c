/*
 * exceptions: triggers #DE, #UD, #BP, #PF (read and write above 1 GiB, which
 * is not mapped) and #GP (non-canonical address).  One handler catches them
 * all, checks the faulting RIP, and resumes at a recovery label after the
 * faulting instruction.  One line per exception; exit 0 if all were as
 * expected, else 1.
 */
#include "rt.h"

#define UNMAPPED_ADDR    0x40001234ul          /* first byte above 1 GiB + 0x1234 */
#define NONCANONICAL_ADDR 0x8000000000000000ul

/* Set by the trigger code before the faulting instruction. */
volatile uint64_t expect_rip;   /* where the CPU should report the exception */
volatile uint64_t resume_rip;   /* where to continue */

static volatile uint64_t got_vector, got_error, got_rip, got_cr2;
static volatile int caught;

static void on_exception(struct isr_frame *f)
{
	got_vector = f->vector;
	got_error = f->error;
	got_rip = f->rip;
	got_cr2 = f->vector == 14 ? read_cr2() : 0;
	caught++;
	f->rip = resume_rip;
}

/* Records label 1 (faulting instruction) and 2 (next instruction) in
 * expect_rip/resume_rip, then runs `insn` at label 1. */
#define TRIGGER(setup, insn, ...)                                            \
	__asm__ volatile("lea 1f(%%rip), %%r11\n\t"                           \
			 "mov %%r11, expect_rip(%%rip)\n\t"                   \
			 "lea 2f(%%rip), %%r11\n\t"                           \
			 "mov %%r11, resume_rip(%%rip)\n\t"                   \
			 setup "\n"                                           \
			 "1:\t" insn "\n"                                     \
			 "2:\n"                                               \
			 : : : "r11", "memory", ##__VA_ARGS__)

static void trigger_de(void)
{
	TRIGGER("xor %%ecx, %%ecx\n\tmov $1, %%eax\n\txor %%edx, %%edx", "divl %%ecx",
		"rax", "rcx", "rdx");
}

static void trigger_ud(void) { TRIGGER("", "ud2"); }

static void trigger_bp(void) { TRIGGER("", "int3"); }

static void trigger_pf_read(void)
{
	TRIGGER("movabs $0x40001234, %%rax", "mov (%%rax), %%rax", "rax");
}

static void trigger_pf_write(void)
{
	TRIGGER("movabs $0x40001234, %%rax", "movl $0x1234, (%%rax)", "rax");
}

static void trigger_gp(void)
{
	TRIGGER("movabs $0x8000000000000000, %%rax", "mov (%%rax), %%rax", "rax");
}

struct test {
	const char *name;
	void (*fn)(void);
	unsigned vector;
	uint64_t error;
	int trap; /* reported RIP is after the instruction */
	uint64_t cr2;
};

static const struct test tests[] = {
	{"#DE", trigger_de, 0, 0, 0, 0},
	{"#UD", trigger_ud, 6, 0, 0, 0},
	{"#BP", trigger_bp, 3, 0, 1, 0},
	{"#PF", trigger_pf_read, 14, 0x0, 0, UNMAPPED_ADDR},  /* not present, read */
	{"#PF", trigger_pf_write, 14, 0x2, 0, UNMAPPED_ADDR}, /* not present, write */
	{"#GP", trigger_gp, 13, 0, 0, 0},
};

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	const unsigned n = sizeof(tests) / sizeof(tests[0]);
	unsigned good = 0;

	for (unsigned v = 0; v < 32; v++)
		isr_set_handler(v, on_exception);
	printf("exceptions: %u tests\n", n);

	for (unsigned i = 0; i < n; i++) {
		const struct test *t = &tests[i];
		caught = 0;
		t->fn();
		uint64_t want_rip = t->trap ? resume_rip : expect_rip;
		int rip_ok = got_rip == want_rip;
		int ok = caught == 1 && got_vector == t->vector && got_error == t->error &&
			 rip_ok && got_cr2 == t->cr2;
		if (caught != 1) {
			printf("%s not caught (caught=%d)\n", t->name, caught);
		} else if (t->vector == 14) {
			printf("%s vector=%lu err=0x%lx cr2=0x%lx rip %s%s\n", t->name,
			       got_vector, got_error, got_cr2, rip_ok ? "ok" : "WRONG",
			       ok ? "" : " FAILED");
		} else {
			printf("%s vector=%lu err=0x%lx rip %s%s\n", t->name, got_vector,
			       got_error, rip_ok ? "ok" : "WRONG", ok ? "" : " FAILED");
		}
		good += ok;
	}
	printf("exceptions: %u/%u as expected\n", good, n);
	return good == n ? 0 : 1;
}
