/* A small printf: %s %c %d %i %u %x %X %p %%, flags 0 - #, width, l ll z. */
#include "rt.h"

struct sink {
	char *buf;     /* NULL: write to the serial port */
	size_t size;
	size_t n;      /* characters produced (may exceed size) */
};

static void put(struct sink *s, char c)
{
	if (!s->buf)
		serial_putc(c);
	else if (s->n + 1 < s->size)
		s->buf[s->n] = c;
	s->n++;
}

static void pad(struct sink *s, char c, int count)
{
	while (count-- > 0)
		put(s, c);
}

static void put_str(struct sink *s, const char *str, int width, int left)
{
	int len = (int)strlen(str);
	if (!left)
		pad(s, ' ', width - len);
	while (*str)
		put(s, *str++);
	if (left)
		pad(s, ' ', width - len);
}

static void put_num(struct sink *s, uint64_t v, int neg, unsigned base, int upper,
		    int width, int zero, int left, const char *prefix)
{
	char tmp[24];
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	int n = 0;
	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	int plen = (int)strlen(prefix) + (neg ? 1 : 0);
	int fill = width - n - plen;
	if (!left && !zero)
		pad(s, ' ', fill);
	if (neg)
		put(s, '-');
	while (*prefix)
		put(s, *prefix++);
	if (!left && zero)
		pad(s, '0', fill);
	while (n)
		put(s, tmp[--n]);
	if (left)
		pad(s, ' ', fill);
}

static int format(struct sink *s, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			put(s, *fmt);
			continue;
		}
		fmt++;
		int zero = 0, left = 0, alt = 0, width = 0, lng = 0;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = 1;
			else if (*fmt == '-')
				left = 1;
			else if (*fmt == '#')
				alt = 1;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
			put_num(s, u, v < 0, 10, 0, width, zero, left, "");
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			unsigned base = *fmt == 'u' ? 10 : 16;
			const char *prefix = (alt && base == 16) ? "0x" : "";
			put_num(s, v, 0, base, *fmt == 'X', width, zero, left, prefix);
			break;
		}
		case 'p':
			put_num(s, (uint64_t)(uintptr_t)va_arg(ap, void *), 0, 16, 0,
				width, zero, left, "0x");
			break;
		case 'c':
			if (!left)
				pad(s, ' ', width - 1);
			put(s, (char)va_arg(ap, int));
			if (left)
				pad(s, ' ', width - 1);
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);
			put_str(s, str ? str : "(null)", width, left);
			break;
		}
		case '%':
			put(s, '%');
			break;
		case 0:
			return (int)s->n;
		default:
			put(s, '%');
			put(s, *fmt);
			break;
		}
	}
	return (int)s->n;
}

int vprintf(const char *fmt, va_list ap)
{
	struct sink s = {0, 0, 0};
	return format(&s, fmt, ap);
}

int printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vprintf(fmt, ap);
	va_end(ap);
	return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct sink s = {buf, size, 0};
	int n = format(&s, fmt, ap);
	if (size)
		buf[s.n < size ? s.n : size - 1] = 0;
	return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}
