/*
 * virtio: drives virtio-mmio devices (virtio 1.x, transport version 2, split
 * virtqueues) the way a small kernel would, finding them from the command
 * line in Linux's syntax:
 *
 *   virtio_mmio.device=<size>@<base>:<irq>[:<id>]   (any number of them)
 *
 * <size> takes 0x/0 prefixes and a K/M/G suffix (Linux memparse), <base> and
 * <irq> are numbers (0x hex, 0 octal, else decimal).  Other words:
 *   echo=console  echo bytes on the virtio console until a 'q' arrives
 *   echo=net      echo frames on virtio-net until one whose payload is "quit"
 *                 (echo=console,net does both)
 *   blkwrite      write sector 1 of the disk and read it back
 *   blkreadall    read the whole disk, 4 KiB per request, and print a hash (a benchmark)
 *   malformed     feed the rng device a looping chain and an out-of-RAM
 *                 buffer; expect DEVICE_NEEDS_RESET; then reset and recover
 *
 * Exit: 0 ok, 1 a check failed, 2 a device timed out, 3 bad cmdline word.
 *
 * lib/virtio.c is compiled into this guest only (included below), not added
 * to LIB_SRCS: the Makefile links every lib object into every guest without
 * --gc-sections, so that would change all the other guests' bytes (and
 * irqhash's RIP-dependent hash) and push irqhash's _end past 0x120000.
 */
#include "rt.h"
#include "lib/virtio.c"

#define EXIT_BAD_CMDLINE 3

#define VIRTIO_NET_F_MAC  (1ull << 5)
#define VIRTIO_BLK_F_RO   (1ull << 5)
#define VIRTIO_BLK_T_IN   0
#define VIRTIO_BLK_T_OUT  1
#define VIRTIO_BLK_S_OK   0

#define NET_HDR_LEN 12          /* virtio_net_hdr incl. num_buffers (1.x) */
#define NET_FRAME   1514
#define RX_BUFS     4
#define CON_CHUNK   64

#define MAX_DEVS 32

static struct virtio_dev devs[MAX_DEVS];
static unsigned ndevs;
static unsigned failures;

static uint8_t rng_buf[32] __attribute__((aligned(64)));
static uint8_t con_rx[RX_BUFS][CON_CHUNK] __attribute__((aligned(64)));
static uint8_t net_rx[RX_BUFS][NET_HDR_LEN + NET_FRAME] __attribute__((aligned(64)));
static const uint8_t net_tx_hdr[NET_HDR_LEN] __attribute__((aligned(16)));
static struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
} blk_hdr __attribute__((aligned(16)));
static uint8_t blk_data[512] __attribute__((aligned(512)));
static uint8_t blk_big[4096] __attribute__((aligned(4096)));
static uint8_t blk_pattern[512] __attribute__((aligned(512)));
static volatile uint8_t blk_status __attribute__((aligned(16)));

/* ---- command line ---------------------------------------------------- */

static int word_eq(const char *w, size_t n, const char *s)
{
	return strlen(s) == n && strncmp(w, s, n) == 0;
}

/* Like Linux's simple_strtoull(s, &end, 0). */
static int parse_num(const char **pp, const char *end, uint64_t *v)
{
	const char *p = *pp;
	unsigned base = 10;
	if (p < end && *p == '0') {
		base = 8;
		if (p + 1 < end && (p[1] == 'x' || p[1] == 'X')) {
			base = 16;
			p += 2;
		}
	}
	uint64_t x = 0;
	const char *start = p;
	for (; p < end; p++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (*p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			break;
		if (d >= base)
			break;
		x = x * base + d;
	}
	if (p == start && base != 8)
		return -1;              /* "0" alone is octal zero: fine */
	*v = x;
	*pp = p;
	return 0;
}

/* <size>@<base>:<irq>[:<id>]; adds a device on success. */
static int parse_device(const char *p, const char *end)
{
	uint64_t size, base, irq, id;
	if (parse_num(&p, end, &size) < 0)
		return -1;
	if (p < end) {
		switch (*p) {
		case 'G': case 'g': size <<= 10; /* fall through */
		case 'M': case 'm': size <<= 10; /* fall through */
		case 'K': case 'k': size <<= 10; p++; break;
		}
	}
	if (p >= end || *p++ != '@' || parse_num(&p, end, &base) < 0)
		return -1;
	if (p >= end || *p++ != ':' || parse_num(&p, end, &irq) < 0)
		return -1;
	if (p < end && (*p++ != ':' || parse_num(&p, end, &id) < 0))
		return -1;              /* the platform-device id is ignored */
	if (p != end || size < VIRTIO_MMIO_CONFIG || irq > 255)
		return -1;
	if (ndevs == MAX_DEVS) {
		printf("virtio: more than %u devices, 0x%llx ignored\n", MAX_DEVS,
		       (unsigned long long)base);
		return 0;
	}
	struct virtio_dev *d = &devs[ndevs];
	if (virtio_probe(d, base, size, (unsigned)irq) < 0) {
		failures++;
		return 0;
	}
	ndevs++;
	printf("virtio: 0x%llx id %u irq %u", (unsigned long long)base,
	       d->device_id, d->irq);
	if (d->device_id == 0)
		printf(" (no device)");
	else if (d->device_id > VIRTIO_ID_RNG)
		printf(" (not handled)");
	printf("\n");
	return 0;
}

static int echo_wanted(const char *what)
{
	const char *s = boot.cmdline;
	for (size_t i = 0; s[i]; i++) {
		if ((i && s[i - 1] != ' ') || strncmp(s + i, "echo=", 5))
			continue;
		/* comma-separated list up to the end of the word */
		const char *p = s + i + 5;
		while (*p && *p != ' ') {
			size_t n = 0;
			while (p[n] && p[n] != ' ' && p[n] != ',')
				n++;
			if (word_eq(p, n, what))
				return 1;
			p += n;
			if (*p == ',')
				p++;
		}
	}
	return 0;
}

static int has_word(const char *what)
{
	const char *s = boot.cmdline;
	size_t n = strlen(what);
	for (size_t i = 0; s[i]; i++)
		if ((i == 0 || s[i - 1] == ' ') && strncmp(s + i, what, n) == 0 &&
		    (s[i + n] == ' ' || s[i + n] == 0))
			return 1;
	return 0;
}

static void parse_cmdline(void)
{
	static const char key[] = "virtio_mmio.device=";
	const size_t kl = sizeof(key) - 1;
	const char *s = boot.cmdline;
	while (*s) {
		while (*s == ' ')
			s++;
		const char *w = s;
		while (*s && *s != ' ')
			s++;
		if ((size_t)(s - w) > kl && strncmp(w, key, kl) == 0 &&
		    parse_device(w + kl, s) < 0) {
			char word[128];
			size_t n = (size_t)(s - w) < sizeof(word) ? (size_t)(s - w) : sizeof(word) - 1;
			memcpy(word, w, n);
			word[n] = 0;
			printf("virtio: bad word \"%s\"\n", word);
			rt_exit(EXIT_BAD_CMDLINE);
		}
	}
}

static struct virtio_dev *find(uint32_t id, const char *name)
{
	for (unsigned i = 0; i < ndevs; i++)
		if (devs[i].device_id == id)
			return &devs[i];
	printf("%s: not on the command line, skipped\n", name);
	return 0;
}

/* The device the test drives, initialised; 0 if it is absent (skipped) or its
 * initialisation failed (counted). */
static struct virtio_dev *open_dev(uint32_t id, const char *name, uint64_t features,
				   unsigned nqueues)
{
	struct virtio_dev *d = find(id, name);
	if (d && virtio_init(d, name, features, nqueues) < 0) {
		failures++;
		return 0;
	}
	return d;
}

/* ---- rng ---------------------------------------------------------------- */

static void rng_read(struct virtio_dev *d, const char *label)
{
	memset(rng_buf, 0, sizeof(rng_buf));
	struct virtio_buf b = { (uintptr_t)rng_buf, sizeof(rng_buf), 1 };
	uint32_t len = virtio_request(&d->vq[0], &b, 1);
	/* The device may legally return fewer bytes; the rest stay zero, so
	 * the hash over all 32 is still deterministic. */
	printf("%s: len %u hash 0x%016llx\n", label, len,
	       (unsigned long long)fnv1a(rng_buf, sizeof(rng_buf)));
	if (len > sizeof(rng_buf)) {
		printf("%s: FAILED: used length larger than the buffer\n", label);
		failures++;
	}
}

static void test_rng(void)
{
	struct virtio_dev *d = open_dev(VIRTIO_ID_RNG, "virtio-rng", VIRTIO_F_VERSION_1, 1);
	if (!d)
		return;
	rng_read(d, "virtio-rng");
}

/* ---- console -------------------------------------------------------------- */

static void test_console(void)
{
	/* No MULTIPORT: queue 0 = port 0 receive, queue 1 = port 0 transmit. */
	struct virtio_dev *d = open_dev(VIRTIO_ID_CONSOLE, "virtio-console",
					 VIRTIO_F_VERSION_1, 2);
	if (!d)
		return;
	printf("virtio-console: ready\n");
	if (!echo_wanted("console"))
		return;

	struct virtq *rx = &d->vq[0], *tx = &d->vq[1];
	virtio_irq_enable(d);
	/* One descriptor per buffer, so the head id names the buffer. */
	for (unsigned i = 0; i < RX_BUFS && i < rx->num; i++) {
		struct virtio_buf b = { (uintptr_t)con_rx[i], CON_CHUNK, 1 };
		virtq_add(rx, &b, 1);
	}
	virtq_notify(rx);

	uint32_t bytes = 0;
	int done = 0;
	while (!done) {
		uint32_t len;
		int id = virtq_wait_used_irq(rx, &len);
		if (len > CON_CHUNK)
			len = CON_CHUNK;
		uint8_t *buf = con_rx[id];
		bytes += len;
		for (uint32_t k = 0; k < len; k++)
			if (buf[k] == 'q')
				done = 1;
		if (len) {
			struct virtio_buf b = { (uintptr_t)buf, len, 0 };
			virtio_request(tx, &b, 1);
		}
		struct virtio_buf b = { (uintptr_t)buf, CON_CHUNK, 1 };
		virtq_add(rx, &b, 1);
		virtq_notify(rx);
	}
	pic_mask(d->irq);
	printf("virtio-console: echoed %u bytes\n", bytes);
}

/* ---- net ---------------------------------------------------------------- */

static void test_net(void)
{
	/* queue 0 = receiveq1, queue 1 = transmitq1 */
	struct virtio_dev *d = open_dev(VIRTIO_ID_NET, "virtio-net",
					 VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC, 2);
	if (!d)
		return;
	if (d->features & VIRTIO_NET_F_MAC) {
		uint8_t mac[6];
		virtio_config_read_bytes(d, 0, mac, sizeof(mac));
		printf("virtio-net: mac %02x:%02x:%02x:%02x:%02x:%02x\n",
		       mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	} else {
		printf("virtio-net: no mac offered\n");
	}
	if (!echo_wanted("net"))
		return;

	struct virtq *rx = &d->vq[0], *tx = &d->vq[1];
	virtio_irq_enable(d);
	/* Without MRG_RXBUF every receive buffer must hold header + a whole
	 * frame. */
	for (unsigned i = 0; i < RX_BUFS && i < rx->num; i++) {
		struct virtio_buf b = { (uintptr_t)net_rx[i], sizeof(net_rx[i]), 1 };
		virtq_add(rx, &b, 1);
	}
	virtq_notify(rx);

	uint32_t frames = 0;
	for (;;) {
		uint32_t len;
		int id = virtq_wait_used_irq(rx, &len);
		uint8_t *buf = net_rx[id];
		if (len < NET_HDR_LEN || len > sizeof(net_rx[id])) {
			printf("virtio-net: FAILED: rx used length %u\n", len);
			failures++;
			break;
		}
		const uint8_t *payload = buf + NET_HDR_LEN;
		uint32_t plen = len - NET_HDR_LEN;
		if (plen == 4 && memcmp(payload, "quit", 4) == 0)
			break;
		/* The payload goes out unchanged behind a zeroed header (no
		 * offloads negotiated); the rx buffer is reposted only after
		 * the device has consumed the tx chain that points into it. */
		struct virtio_buf out[2] = {
			{ (uintptr_t)net_tx_hdr, NET_HDR_LEN, 0 },
			{ (uintptr_t)payload, plen, 0 },
		};
		virtio_request(tx, out, plen ? 2 : 1);
		frames++;
		struct virtio_buf b = { (uintptr_t)buf, sizeof(net_rx[id]), 1 };
		virtq_add(rx, &b, 1);
		virtq_notify(rx);
	}
	pic_mask(d->irq);
	printf("virtio-net: echoed %u frames\n", frames);
}

/* ---- blk ---------------------------------------------------------------- */


static int blk_rw_n(struct virtio_dev *d, uint32_t type, uint64_t sector, uint8_t *data,
		    uint32_t len)
{
	blk_hdr.type = type;
	blk_hdr.reserved = 0;
	blk_hdr.sector = sector;
	blk_status = 0xff;      /* a device that never writes it is caught */
	struct virtio_buf b[3] = {
		{ (uintptr_t)&blk_hdr, sizeof(blk_hdr), 0 },
		{ (uintptr_t)data, len, type == VIRTIO_BLK_T_IN },
		{ (uintptr_t)&blk_status, 1, 1 },
	};
	virtio_request(&d->vq[0], b, 3);
	if (blk_status != VIRTIO_BLK_S_OK) {
		printf("virtio-blk: FAILED: %s sector %llu status %u\n",
		       type == VIRTIO_BLK_T_IN ? "read" : "write",
		       (unsigned long long)sector, blk_status);
		failures++;
		return -1;
	}
	return 0;
}

static int blk_rw(struct virtio_dev *d, uint32_t type, uint64_t sector, uint8_t *data)
{
	return blk_rw_n(d, type, sector, data, 512);
}

static void test_blk(void)
{
	/* RO is accepted only to learn about it. */
	struct virtio_dev *d = open_dev(VIRTIO_ID_BLOCK, "virtio-blk",
					 VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO, 1);
	if (!d)
		return;
	uint64_t cap = virtio_config_read64(d, 0);     /* 512-byte sectors */
	printf("virtio-blk: capacity %llu sectors\n", (unsigned long long)cap);
	if (cap == 0) {
		printf("virtio-blk: FAILED: empty disk\n");
		failures++;
		return;
	}
	memset(blk_data, 0, sizeof(blk_data));
	if (blk_rw(d, VIRTIO_BLK_T_IN, 0, blk_data) < 0)
		return;
	printf("virtio-blk: sector 0 hash 0x%016llx\n",
	       (unsigned long long)fnv1a(blk_data, sizeof(blk_data)));
	if (has_word("blkreadall")) {  /* bench/virtio_blk.py: the whole disk, 4 KiB at a time */
		uint64_t h = 0;
		for (uint64_t s = 0; s + 8 <= cap; s += 8) {
			if (blk_rw_n(d, VIRTIO_BLK_T_IN, s, blk_big, sizeof(blk_big)) < 0)
				return;
			h = h * 31 + *(uint64_t *)blk_big + s;  /* cheap: KVM here emulates */
		}
		printf("virtio-blk: read %llu sectors, hash 0x%016llx\n",
		       (unsigned long long)(cap & ~7ull), (unsigned long long)h);
	}
	if (!has_word("blkwrite"))
		return;

	if ((d->features & VIRTIO_BLK_F_RO) || cap < 2) {
		printf("virtio-blk: FAILED: blkwrite: %s\n",
		       cap < 2 ? "disk smaller than 2 sectors" : "device is read-only");
		failures++;
		return;
	}
	for (unsigned i = 0; i < 512; i++)
		blk_pattern[i] = (uint8_t)(i * 7 + (i >> 8) * 3 + 0x5a);
	if (blk_rw(d, VIRTIO_BLK_T_OUT, 1, blk_pattern) < 0)
		return;
	memset(blk_data, 0, sizeof(blk_data));
	if (blk_rw(d, VIRTIO_BLK_T_IN, 1, blk_data) < 0)
		return;
	if (memcmp(blk_data, blk_pattern, 512) != 0) {
		printf("virtio-blk: FAILED: sector 1 read back differs\n");
		failures++;
		return;
	}
	printf("virtio-blk: sector 1 write+read back ok, hash 0x%016llx\n",
	       (unsigned long long)fnv1a(blk_pattern, sizeof(blk_pattern)));
}

/* ---- malformed chains ---------------------------------------------------- */

#define BAD_ADDR 0x00007ffff0000000ull /* far above any RAM, still canonical */
#define NEEDS_RESET_SPINS 100000u

/* Publish a hand-built chain on a freshly initialised rng queue 0 and
 * expect the device to flag DEVICE_NEEDS_RESET instead of using it. */
static int malformed_case(struct virtio_dev *d, int loop, const char *what)
{
	if (virtio_init(d, "malformed", VIRTIO_F_VERSION_1, 1) < 0)
		return -1;
	struct virtq *q = &d->vq[0];
	struct virtq_desc *desc = q->mem->desc;
	if (loop) {
		/* 0 -> 1 -> 0 -> ...: a device following it never ends. */
		desc[0] = (struct virtq_desc){ (uintptr_t)rng_buf, 16,
			VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1 };
		desc[1] = (struct virtq_desc){ (uintptr_t)rng_buf + 16, 16,
			VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0 };
	} else {
		desc[0] = (struct virtq_desc){ BAD_ADDR, 32, VIRTQ_DESC_F_WRITE, 0 };
	}
	virtq_publish(q, 0);
	virtq_notify(q);

	uint32_t status = 0;
	for (unsigned i = 0; i < NEEDS_RESET_SPINS; i++) {
		status = vio_read32(d, VIRTIO_MMIO_STATUS);
		if (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
			break;
	}
	uint16_t used = *(volatile uint16_t *)&q->mem->used.idx;
	if (!(status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)) {
		printf("malformed: FAILED: %s: status 0x%x, used idx %u, no DEVICE_NEEDS_RESET\n",
		       what, status, used);
		return -1;
	}
	printf("malformed: %s%sneeds-reset ok\n", loop ? "" : what, loop ? "" : " ");
	/* Status = 0 is the only way out of NEEDS_RESET; then start over. */
	if (virtio_init(d, "malformed", VIRTIO_F_VERSION_1, 1) < 0)
		return -1;
	rng_read(d, "malformed: rng after reset");
	return 0;
}

static void test_malformed(void)
{
	if (!has_word("malformed"))
		return;
	struct virtio_dev *d = 0;
	for (unsigned i = 0; i < ndevs && !d; i++)
		if (devs[i].device_id == VIRTIO_ID_RNG)
			d = &devs[i];
	if (!d) {
		printf("malformed: no rng device, skipped\n");
		return;
	}
	if (malformed_case(d, 1, "loop") < 0)
		failures++;
	if (malformed_case(d, 0, "bad-address") < 0)
		failures++;
}

int kmain(uint32_t magic, uint32_t mbinfo_phys)
{
	(void)magic;
	(void)mbinfo_phys;
	printf("virtio test\n");
	parse_cmdline();
	if (ndevs == 0)
		printf("virtio: no devices on the command line\n");
	test_rng();
	test_console();
	test_net();
	test_blk();
	test_malformed();
	printf("virtio: done, %u failures\n", failures);
	return failures ? VIRTIO_EXIT_FAIL : 0;
}
