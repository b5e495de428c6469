/*
 * rtc: reads the CMOS clock (after UIP clears), validates every field and
 * prints "rtc ok" -- never the time itself, so the output is deterministic.
 * Then reads the CMOS memory-size bytes and prints the extended memory size.
 * Exit 0, or 1 if the clock looked wrong.
 */
#include "rt.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71

#define RTC_SEC    0x00
#define RTC_MIN    0x02
#define RTC_HOUR   0x04
#define RTC_WDAY   0x06
#define RTC_MDAY   0x07
#define RTC_MONTH  0x08
#define RTC_YEAR   0x09
#define RTC_REG_A  0x0a
#define RTC_REG_B  0x0b
#define RTC_REG_D  0x0d
#define RTC_CENTURY 0x32

#define REG_A_UIP  0x80
#define REG_B_24H  0x02
#define REG_B_BIN  0x04
#define REG_D_VRT  0x80

static uint8_t cmos_read(uint8_t reg)
{
	outb(CMOS_INDEX, reg);
	return inb(CMOS_DATA);
}

struct rtc_time {
	uint8_t sec, min, hour, wday, mday, month, year, century;
};

static int wait_uip_clear(void)
{
	/* UIP is set for at most ~2 ms per second; give it plenty of reads. */
	for (int i = 0; i < 10000; i++)
		if (!(cmos_read(RTC_REG_A) & REG_A_UIP))
			return 1;
	return 0;
}

static void read_raw(struct rtc_time *t)
{
	t->sec = cmos_read(RTC_SEC);
	t->min = cmos_read(RTC_MIN);
	t->hour = cmos_read(RTC_HOUR);
	t->wday = cmos_read(RTC_WDAY);
	t->mday = cmos_read(RTC_MDAY);
	t->month = cmos_read(RTC_MONTH);
	t->year = cmos_read(RTC_YEAR);
	t->century = cmos_read(RTC_CENTURY);
}

static int bcd_ok(uint8_t v)
{
	return (v & 0x0f) <= 9 && (v >> 4) <= 9;
}

static uint8_t from_bcd(uint8_t v)
{
	return (uint8_t)((v >> 4) * 10 + (v & 0x0f));
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	int ok = 1;
	const char *why = "";

	uint8_t reg_b = cmos_read(RTC_REG_B);
	uint8_t reg_d = cmos_read(RTC_REG_D);
	if (!(reg_d & REG_D_VRT)) {
		ok = 0;
		why = "register D: VRT (valid RAM and time) clear";
	}

	/* Read until two consecutive reads agree (an update may intervene). */
	struct rtc_time t, t2;
	int stable = 0;
	for (int tries = 0; tries < 5 && !stable; tries++) {
		if (!wait_uip_clear()) {
			ok = 0;
			why = "UIP never cleared";
			break;
		}
		read_raw(&t);
		wait_uip_clear();
		read_raw(&t2);
		stable = memcmp(&t, &t2, sizeof(t)) == 0;
	}
	if (ok && !stable) {
		ok = 0;
		why = "time never stable";
	}

	if (ok) {
		int bin = reg_b & REG_B_BIN;
		int pm = 0;
		if (!(reg_b & REG_B_24H)) {
			pm = t.hour & 0x80;
			t.hour &= 0x7f;
		}
		if (!bin) {
			uint8_t *f[] = {&t.sec, &t.min, &t.hour, &t.wday, &t.mday,
					&t.month, &t.year, &t.century};
			for (unsigned i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
				if (!bcd_ok(*f[i]) && f[i] != &t.century) {
					ok = 0;
					why = "bad BCD digit";
				}
				*f[i] = from_bcd(*f[i]);
			}
		}
		if (!(reg_b & REG_B_24H)) {
			if (t.hour < 1 || t.hour > 12) {
				ok = 0;
				why = "12-hour clock out of range";
			}
			t.hour = (uint8_t)(t.hour % 12 + (pm ? 12 : 0));
		}
		if (t.sec > 59 || t.min > 59 || t.hour > 23) {
			ok = 0;
			why = "time of day out of range";
		}
		if (t.mday < 1 || t.mday > 31 || t.month < 1 || t.month > 12 ||
		    t.year > 99) {
			ok = 0;
			why = "date out of range";
		}
		/* Day of week is optional on many CMOS implementations: not checked. */
	}
	printf("rtc mode: %s, %s\n", (reg_b & REG_B_BIN) ? "binary" : "bcd",
	       (reg_b & REG_B_24H) ? "24h" : "12h");
	if (ok)
		printf("rtc ok\n");
	else
		printf("rtc FAILED: %s\n", why);

	/* Memory size bytes as a PC BIOS sets them. */
	unsigned ext = cmos_read(0x30) | cmos_read(0x31) << 8;   /* KiB above 1 MiB, <= 65535 */
	unsigned ext17 = cmos_read(0x17) | cmos_read(0x18) << 8; /* same, older location */
	unsigned hi64k = cmos_read(0x34) | cmos_read(0x35) << 8; /* 64 KiB blocks above 16 MiB */
	unsigned total_ext = hi64k ? 15 * 1024 + hi64k * 64 : ext;
	printf("cmos 0x30/0x31 extended memory: %u KB\n", ext);
	printf("cmos 0x17/0x18 extended memory: %u KB\n", ext17);
	printf("cmos 0x34/0x35 memory above 16M: %u x 64 KB\n", hi64k);
	printf("extended memory: %u KB\n", total_ext);
	return ok ? 0 : 1;
}
