/*
 * corrupt: a planted memory corruption for debugger tests.
 *
 * `table` holds TABLE_SIZE entries and `guard_value` sits right after it in
 * .data.  update_all() loops one entry too far (<= instead of <), so
 * buggy_store() writes table[TABLE_SIZE].key -- which is guard_value.
 * check_table() later notices and calls panic("guard corrupted"), which
 * prints and exits with status 3.
 *
 * For gdb:  break panic / print guard_value / watch guard_value /
 *           break buggy_store if idx == 8
 * All the functions are noinline/noclone and the globals are plain C objects
 * with DWARF types.
 */
#include "rt.h"

#define TABLE_SIZE  8
#define GUARD_MAGIC 0x600df00du

struct entry {
	uint32_t key;
	uint32_t value;
};

/* Order matters: -fno-toplevel-reorder keeps them in this order in .data. */
struct entry table[TABLE_SIZE] = {{0xffffffffu, 0}};
uint32_t guard_value = GUARD_MAGIC;
uint32_t updates;

NOINLINE NORETURN void panic(const char *msg);

NOINLINE void init_table(void)
{
	for (uint32_t i = 0; i < TABLE_SIZE; i++) {
		table[i].key = i;
		table[i].value = 0;
	}
}

NOINLINE void buggy_store(uint32_t idx, uint32_t key, uint32_t value)
{
	/* No bounds check: idx == TABLE_SIZE lands on guard_value. */
	table[idx].key = key;
	table[idx].value = value;
}

NOINLINE void update_entry(uint32_t idx, uint32_t value)
{
	updates++;
	buggy_store(idx, idx + 100, value);
}

NOINLINE void update_all(uint32_t n)
{
	for (uint32_t i = 0; i <= n; i++) /* the bug: should be i < n */
		update_entry(i, i * i);
}

NOINLINE uint32_t check_table(void)
{
	uint32_t sum = 0;
	for (uint32_t i = 0; i < TABLE_SIZE; i++)
		sum += table[i].key * 31 + table[i].value;
	printf("check_table: sum=%u guard_value=0x%08x\n", sum, guard_value);
	if (guard_value != GUARD_MAGIC)
		panic("guard corrupted");
	return sum;
}

NOINLINE NORETURN void panic(const char *msg)
{
	printf("PANIC: %s\n", msg);
	rt_exit(3);
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	if ((uintptr_t)&guard_value != (uintptr_t)&table[TABLE_SIZE]) {
		printf("corrupt: layout is wrong (guard_value not right after table)\n");
		return 2;
	}
	printf("corrupt: init_table\n");
	init_table();
	check_table();
	printf("corrupt: updating %u entries\n", TABLE_SIZE);
	update_all(TABLE_SIZE);
	printf("corrupt: %u updates done\n", updates);
	check_table();
	printf("corrupt: table ok (not reached)\n");
	return 0;
}
