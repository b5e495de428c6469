/*
 * virtio-mmio (transport version 2) + split virtqueues, polled.  See virtio.h.
 *
 * Everything here is single-threaded and runs with IF=0 except inside
 * cpu_wait() in virtq_wait_used_irq().  x86 keeps stores in order with other
 * stores and loads in order with other loads, and an MMIO access is not
 * reordered around ordinary memory accesses to WB memory in the ways that
 * matter here, so the ring protocol needs only compiler barriers.
 */
#include "rt.h"
#include "virtio.h"

/* ---- mapping the MMIO windows -------------------------------------------
 * lib/boot.S maps only 0-1 GiB.  Rather than change every guest's page
 * tables, this guest adds 2 MiB pages for just the windows it was told
 * about, with page directories of its own for GiB 1-3. */
extern uint64_t pdpt[512];
static uint64_t vio_pd[3][512] __attribute__((aligned(4096)));

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_PS  0x080
#define PAGE_2M (1ull << 21)
#define PTE_ADDR 0x000ffffffffff000ull

int virtio_map_window(uint64_t base, uint64_t size)
{
	if (!size || base + size > (4ull << 30) || base + size < base)
		return -1;
	int changed = 0;
	for (uint64_t a = base & ~(PAGE_2M - 1); a < base + size; a += PAGE_2M) {
		unsigned gib = (unsigned)(a >> 30);
		if (gib == 0)
			continue;               /* boot.S identity-maps it */
		uint64_t *pd = vio_pd[gib - 1];
		if (pdpt[gib] & PTE_P) {
			/* Compare the address only: the CPU sets the Accessed
			 * bit in our entry as soon as it walks through it. */
			if ((pdpt[gib] & PTE_ADDR) != (uintptr_t)pd)
				continue;       /* someone else maps this GiB */
		} else {
			pdpt[gib] = (uintptr_t)pd | PTE_P | PTE_RW;
			changed = 1;
		}
		unsigned i = (unsigned)(a >> 21) & 511;
		if (!(pd[i] & PTE_P)) {
			pd[i] = a | PTE_PS | PTE_PCD | PTE_PWT | PTE_RW | PTE_P;
			changed = 1;
		}
	}
	if (changed) {
		/* Not-present entries are not cached by the TLB, but reloading
		 * CR3 also drops any paging-structure cache entries; cheap. */
		uint64_t cr3;
		__asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
		__asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
	}
	return 0;
}

/* ---- device level ------------------------------------------------------ */

int virtio_probe(struct virtio_dev *d, uint64_t base, uint64_t size, unsigned irq)
{
	memset(d, 0, sizeof(*d));
	if (virtio_map_window(base, size) < 0) {
		printf("virtio: 0x%llx: window not below 4 GiB\n",
		       (unsigned long long)base);
		return -1;
	}
	d->base = (uintptr_t)base;
	d->size = size;
	d->irq = irq;
	uint32_t magic = vio_read32(d, VIRTIO_MMIO_MAGIC_VALUE);
	if (magic != VIRTIO_MMIO_MAGIC) {
		printf("virtio: 0x%llx: bad magic 0x%08x\n",
		       (unsigned long long)base, magic);
		return -1;
	}
	d->version = vio_read32(d, VIRTIO_MMIO_VERSION);
	if (d->version != 2) {
		/* Version 1 is the legacy (pre-1.0) layout with QueuePFN. */
		printf("virtio: 0x%llx: transport version %u, need 2\n",
		       (unsigned long long)base, d->version);
		return -1;
	}
	d->device_id = vio_read32(d, VIRTIO_MMIO_DEVICE_ID);
	return 0;
}

void virtio_reset(struct virtio_dev *d)
{
	vio_write32(d, VIRTIO_MMIO_STATUS, 0);
	/* The spec has the driver wait until the reset is visible before it
	 * touches the device again. */
	for (unsigned i = 0; i < VIRTIO_SPIN_LIMIT; i++)
		if (vio_read32(d, VIRTIO_MMIO_STATUS) == 0)
			return;
	printf("virtio: 0x%lx: reset never completed\n", (unsigned long)d->base);
	rt_exit(VIRTIO_EXIT_TIMEOUT);
}

static void set_status(struct virtio_dev *d, uint32_t bits)
{
	vio_write32(d, VIRTIO_MMIO_STATUS, vio_read32(d, VIRTIO_MMIO_STATUS) | bits);
}

static int fail(struct virtio_dev *d, const char *name, const char *why)
{
	printf("%s: FAILED: %s\n", name, why);
	set_status(d, VIRTIO_STATUS_FAILED);
	return -1;
}

int virtio_negotiate(struct virtio_dev *d, const char *name, uint64_t wanted)
{
	virtio_reset(d);
	set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(d, VIRTIO_STATUS_DRIVER);

	vio_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	uint64_t offered = (uint64_t)vio_read32(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	vio_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	offered |= vio_read32(d, VIRTIO_MMIO_DEVICE_FEATURES);
	if (!(offered & VIRTIO_F_VERSION_1))
		return fail(d, name, "device does not offer VIRTIO_F_VERSION_1");

	d->features = offered & (wanted | VIRTIO_F_VERSION_1);
	vio_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vio_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)d->features);
	vio_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	vio_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));

	/* The device may refuse the subset: FEATURES_OK only counts if it is
	 * still set when read back. */
	set_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(vio_read32(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
		return fail(d, name, "device did not accept the features");
	return 0;
}

/* Queue memory for every device of the guest; a device keeps its blocks
 * across resets. */
#define VQ_POOL 8
static struct virtq_mem vq_pool[VQ_POOL];
static unsigned vq_pool_used;

int virtio_setup_queue(struct virtio_dev *d, unsigned qi)
{
	char why[64];
	if (qi >= VIRTIO_MAX_QUEUES)
		return fail(d, "virtio", "queue index too large");
	vio_write32(d, VIRTIO_MMIO_QUEUE_SEL, qi);
	if (vio_read32(d, VIRTIO_MMIO_QUEUE_READY) != 0) {
		snprintf(why, sizeof(why), "queue %u already ready", qi);
		return fail(d, "virtio", why);
	}
	uint32_t max = vio_read32(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (max == 0) {
		snprintf(why, sizeof(why), "queue %u not available", qi);
		return fail(d, "virtio", why);
	}
	uint16_t num = VIRTQ_MAX;
	while (num > max)
		num >>= 1;

	if (!d->mem[qi]) {
		if (vq_pool_used == VQ_POOL)
			return fail(d, "virtio", "out of queue memory");
		d->mem[qi] = &vq_pool[vq_pool_used++];
	}
	struct virtq_mem *m = d->mem[qi];
	memset(m, 0, sizeof(*m));
	struct virtq *q = &d->vq[qi];
	q->dev = d;
	q->index = qi;
	q->num = num;
	q->avail_idx = 0;
	q->last_used = 0;
	q->mem = m;
	for (uint16_t i = 0; i < num; i++)
		m->desc[i].next = (uint16_t)(i + 1);
	q->free_head = 0;
	q->num_free = num;

	uint64_t desc = (uintptr_t)m->desc, avail = (uintptr_t)&m->avail,
		 used = (uintptr_t)&m->used;
	vio_write32(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vio_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	vio_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	vio_write32(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
	vio_write32(d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	vio_write32(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
	vio_write32(d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	vio_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return 0;
}

void virtio_driver_ok(struct virtio_dev *d)
{
	set_status(d, VIRTIO_STATUS_DRIVER_OK);
}

int virtio_init(struct virtio_dev *d, const char *name, uint64_t wanted,
		unsigned nqueues)
{
	if (virtio_negotiate(d, name, wanted) < 0)
		return -1;
	for (unsigned i = 0; i < nqueues; i++)
		if (virtio_setup_queue(d, i) < 0)
			return -1;
	virtio_driver_ok(d);
	return 0;
}

/* ---- virtqueue --------------------------------------------------------- */

/* The free descriptors form a list linked through .next, so a chain taken
 * from its head is already linked in order: only the flags need setting. */
int virtq_add(struct virtq *q, const struct virtio_buf *bufs, unsigned n)
{
	if (n == 0 || n > q->num_free)
		return -1;
	struct virtq_desc *desc = q->mem->desc;
	uint16_t head = q->free_head, cur = head;
	for (unsigned i = 0; i < n; i++) {
		desc[cur].addr = bufs[i].addr;
		desc[cur].len = bufs[i].len;
		desc[cur].flags = (uint16_t)((bufs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
					     (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		cur = desc[cur].next;
	}
	q->free_head = cur;
	q->num_free = (uint16_t)(q->num_free - n);
	virtq_publish(q, head);
	return head;
}

void virtq_publish(struct virtq *q, uint16_t head)
{
	struct virtq_avail *av = &q->mem->avail;
	av->ring[q->avail_idx % q->num] = head;
	/* The device may read the ring entry as soon as it sees the new idx:
	 * descriptors and ring entry must be written first. */
	barrier();
	q->avail_idx++;
	*(volatile uint16_t *)&av->idx = q->avail_idx;
	barrier();
}

void virtq_notify(struct virtq *q)
{
	/* The idx store above happens before this MMIO store (x86 stores are
	 * ordered), so the device never misses the new entry.  We never
	 * negotiate EVENT_IDX and ignore used.flags' NO_NOTIFY hint: always
	 * notifying is allowed, merely slower. */
	vio_write32(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

int virtq_get_used(struct virtq *q, uint32_t *len)
{
	struct virtq_used *u = &q->mem->used;
	uint16_t idx = *(volatile uint16_t *)&u->idx;
	if (idx == q->last_used)
		return -1;
	/* Read the element only after seeing idx move past it. */
	barrier();
	struct virtq_used_elem e = ((volatile struct virtq_used *)u)->ring[q->last_used % q->num];
	q->last_used++;
	if (e.id >= q->num) {
		printf("virtio: 0x%lx queue %u: used id %u out of range\n",
		       (unsigned long)q->dev->base, q->index, e.id);
		rt_exit(VIRTIO_EXIT_FAIL);
	}
	/* Return the chain to the free list. */
	struct virtq_desc *desc = q->mem->desc;
	uint16_t last = (uint16_t)e.id, n = 1;
	while ((desc[last].flags & VIRTQ_DESC_F_NEXT) && n < q->num) {
		last = desc[last].next;
		n++;
	}
	desc[last].next = q->free_head;
	q->free_head = (uint16_t)e.id;
	q->num_free = (uint16_t)(q->num_free + n);
	if (len)
		*len = e.len;
	return (int)e.id;
}

static void ack_interrupt(struct virtio_dev *d)
{
	uint32_t isr = vio_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS);
	if (isr)
		vio_write32(d, VIRTIO_MMIO_INTERRUPT_ACK, isr);
}

int virtq_wait_used(struct virtq *q, uint32_t *len)
{
	for (unsigned i = 0; i < VIRTIO_SPIN_LIMIT; i++) {
		int id = virtq_get_used(q, len);
		if (id >= 0) {
			ack_interrupt(q->dev);
			return id;
		}
		/* An MMIO read is a VM exit: the VMM can run the device here.
		 * Acknowledging also lowers a level-triggered IRQ line. */
		ack_interrupt(q->dev);
		__asm__ volatile("pause");
	}
	printf("virtio: 0x%lx queue %u: timeout, device status 0x%x\n",
	       (unsigned long)q->dev->base, q->index,
	       vio_read32(q->dev, VIRTIO_MMIO_STATUS));
	rt_exit(VIRTIO_EXIT_TIMEOUT);
}

uint32_t virtio_request(struct virtq *q, const struct virtio_buf *bufs, unsigned n)
{
	int head = virtq_add(q, bufs, n);
	if (head < 0) {
		printf("virtio: 0x%lx queue %u: no free descriptors\n",
		       (unsigned long)q->dev->base, q->index);
		rt_exit(VIRTIO_EXIT_FAIL);
	}
	virtq_notify(q);
	uint32_t len;
	int id = virtq_wait_used(q, &len);
	if (id != head) {
		printf("virtio: 0x%lx queue %u: used id %d, expected %d\n",
		       (unsigned long)q->dev->base, q->index, id, head);
		rt_exit(VIRTIO_EXIT_FAIL);
	}
	return len;
}

/* ---- interrupts (only for waits on host input) ------------------------- */

static struct virtio_dev *irq_dev[16];

static void virtio_irq(struct isr_frame *f)
{
	struct virtio_dev *d = irq_dev[(f->vector - IRQ_BASE) & 15];
	if (d)
		ack_interrupt(d);
}

void virtio_irq_enable(struct virtio_dev *d)
{
	if (d->irq >= 16)
		return;
	irq_dev[d->irq] = d;
	irq_set_handler(d->irq, virtio_irq);
	pic_unmask(d->irq);
}

int virtq_wait_used_irq(struct virtq *q, uint32_t *len)
{
	struct virtio_dev *d = q->dev;
	int use_irq = d->irq < 16 && irq_dev[d->irq] == d;
	for (;;) {
		int id = virtq_get_used(q, len);
		if (id >= 0)
			return id;
		if (!use_irq) {
			/* No PIC line (irq >= 16): poll, one MMIO exit a turn. */
			ack_interrupt(d);
			__asm__ volatile("pause");
			continue;
		}
		/* A completion between the check and here leaves the IRQ
		 * pending at the PIC, and sti;hlt takes it: no lost wakeup. */
		cpu_wait();
	}
}

/* ---- device configuration space --------------------------------------- */

#define CONFIG_RETRIES 1000

/* The config space may change under us; ConfigGeneration tells us whether
 * a multi-access read saw one consistent version. */
uint64_t virtio_config_read64(struct virtio_dev *d, unsigned off)
{
	for (unsigned i = 0; i < CONFIG_RETRIES; i++) {
		uint32_t g = vio_read32(d, VIRTIO_MMIO_CONFIG_GENERATION);
		uint32_t lo = vio_read32(d, VIRTIO_MMIO_CONFIG + off);
		uint32_t hi = vio_read32(d, VIRTIO_MMIO_CONFIG + off + 4);
		if (vio_read32(d, VIRTIO_MMIO_CONFIG_GENERATION) == g)
			return (uint64_t)hi << 32 | lo;
	}
	printf("virtio: 0x%lx: config generation never settles\n", (unsigned long)d->base);
	rt_exit(VIRTIO_EXIT_FAIL);
}

void virtio_config_read_bytes(struct virtio_dev *d, unsigned off, uint8_t *buf, unsigned n)
{
	for (unsigned i = 0; i < CONFIG_RETRIES; i++) {
		uint32_t g = vio_read32(d, VIRTIO_MMIO_CONFIG_GENERATION);
		for (unsigned k = 0; k < n; k++)
			buf[k] = vio_read8(d, VIRTIO_MMIO_CONFIG + off + k);
		if (vio_read32(d, VIRTIO_MMIO_CONFIG_GENERATION) == g)
			return;
	}
	printf("virtio: 0x%lx: config generation never settles\n", (unsigned long)d->base);
	rt_exit(VIRTIO_EXIT_FAIL);
}

uint64_t fnv1a(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}
