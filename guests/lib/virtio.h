/*
 * Minimal virtio 1.x driver layer for the virtio-mmio transport (register
 * layout version 2, "modern") with split virtqueues.  Polled, one driver
 * thread, ring 0, physical == virtual.  Not a library object: a guest that
 * wants it does `#include "lib/virtio.c"` (see guests/virtio.c for why).
 */
#ifndef RT_VIRTIO_H
#define RT_VIRTIO_H

#include <stddef.h>
#include <stdint.h>

/* virtio-mmio registers (offsets into the 0x200-byte window). */
#define VIRTIO_MMIO_MAGIC_VALUE        0x000 /* "virt" */
#define VIRTIO_MMIO_VERSION            0x004
#define VIRTIO_MMIO_DEVICE_ID          0x008
#define VIRTIO_MMIO_VENDOR_ID          0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES    0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES    0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL          0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX      0x034
#define VIRTIO_MMIO_QUEUE_NUM          0x038
#define VIRTIO_MMIO_QUEUE_READY        0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY       0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS   0x060
#define VIRTIO_MMIO_INTERRUPT_ACK      0x064
#define VIRTIO_MMIO_STATUS             0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW     0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH    0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW   0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH  0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW   0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH  0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION  0x0fc
#define VIRTIO_MMIO_CONFIG             0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u /* 'v' 'i' 'r' 't' little-endian */

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE       0x01
#define VIRTIO_STATUS_DRIVER            0x02
#define VIRTIO_STATUS_DRIVER_OK         0x04
#define VIRTIO_STATUS_FEATURES_OK       0x08
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED            0x80

#define VIRTIO_F_VERSION_1 (1ull << 32)

/* InterruptStatus bits. */
#define VIRTIO_MMIO_INT_VRING  0x1
#define VIRTIO_MMIO_INT_CONFIG 0x2

/* Device IDs. */
#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLOCK   2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG     4

/* ---- split virtqueue layout (virtio 1.x, little-endian = native) ---- */
#define VIRTQ_DESC_F_NEXT  1
#define VIRTQ_DESC_F_WRITE 2 /* device writes (otherwise device reads) */

#define VIRTQ_MAX 8 /* entries per queue; a power of two as split rings need */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[VIRTQ_MAX];
	uint16_t used_event; /* unused: VIRTIO_F_EVENT_IDX is never accepted */
};

struct virtq_used_elem {
	uint32_t id;  /* head of the chain */
	uint32_t len; /* bytes the device wrote into the chain */
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[VIRTQ_MAX];
	uint16_t avail_event;
};

/* The three parts of one queue, 256 bytes.  The spec asks for alignments of
 * 16 (desc), 2 (avail) and 4 (used); the modern transport takes three
 * separate addresses, so no page-sized layout as in legacy virtio. */
struct virtq_mem {
	struct virtq_desc desc[VIRTQ_MAX] __attribute__((aligned(16)));
	struct virtq_avail avail __attribute__((aligned(16)));
	struct virtq_used used __attribute__((aligned(16)));
} __attribute__((aligned(64)));

struct virtio_dev;

struct virtq {
	struct virtio_dev *dev;
	unsigned index;         /* queue number on the device */
	uint16_t num;           /* entries in use (<= VIRTQ_MAX) */
	uint16_t avail_idx;     /* our copy of avail.idx (free-running) */
	uint16_t last_used;     /* next used.idx slot we have not consumed */
	uint16_t free_head;     /* descriptor free list, linked through .next */
	uint16_t num_free;
	struct virtq_mem *mem;
};

#define VIRTIO_MAX_QUEUES 2

struct virtio_dev {
	uintptr_t base;         /* MMIO window (identity mapped) */
	uint64_t size;
	unsigned irq;
	uint32_t device_id;
	uint32_t version;
	uint64_t features;      /* accepted (driver) features */
	struct virtq vq[VIRTIO_MAX_QUEUES];
	struct virtq_mem *mem[VIRTIO_MAX_QUEUES];
};

/* One buffer of a chain. */
struct virtio_buf {
	uint64_t addr;          /* guest-physical (== virtual here) */
	uint32_t len;
	int writable;           /* 1: device writes it */
};

/* Exit statuses of the virtio layer. */
#define VIRTIO_EXIT_FAIL    1 /* a check failed */
#define VIRTIO_EXIT_TIMEOUT 2 /* the device never completed a request */

/* Default spin bound of virtio_request (each spin is one MMIO read, i.e.
 * one VM exit, so the VMM gets a chance to run the device every time). */
#define VIRTIO_SPIN_LIMIT 1000000u

/* ---- MMIO accessors -------------------------------------------------- */
static inline uint32_t vio_read32(const struct virtio_dev *d, unsigned off)
{
	return *(volatile uint32_t *)(d->base + off);
}
static inline void vio_write32(const struct virtio_dev *d, unsigned off, uint32_t v)
{
	*(volatile uint32_t *)(d->base + off) = v;
}
static inline uint8_t vio_read8(const struct virtio_dev *d, unsigned off)
{
	return *(volatile uint8_t *)(d->base + off);
}

/* Make the 2 MiB page(s) covering [base, base+size) present (uncached) in
 * the boot page tables.  Only addresses below 4 GiB.  0 on success. */
int virtio_map_window(uint64_t base, uint64_t size);

/* Fill d from the window and check magic and version (2).  Returns 0 when
 * usable; otherwise prints why and returns -1. */
int virtio_probe(struct virtio_dev *d, uint64_t base, uint64_t size, unsigned irq);

/* Write 0 to Status and wait until it reads back 0. */
void virtio_reset(struct virtio_dev *d);

/* reset, ACKNOWLEDGE, DRIVER, read the 64 feature bits, accept
 * `wanted & offered` (VERSION_1 is required), FEATURES_OK and check it
 * stuck, then set up queues 0..nqueues-1 and set DRIVER_OK.  `name` prefixes
 * the failure lines.  Returns 0, or -1 after setting FAILED. */
int virtio_init(struct virtio_dev *d, const char *name, uint64_t wanted,
		unsigned nqueues);
/* The same without DRIVER_OK, for tests that want to do things in between. */
int virtio_negotiate(struct virtio_dev *d, const char *name, uint64_t wanted);
int virtio_setup_queue(struct virtio_dev *d, unsigned qi);
void virtio_driver_ok(struct virtio_dev *d);

/* Put a chain on the available ring (no notify).  Returns its head
 * descriptor, or -1 if the queue lacks free descriptors. */
int virtq_add(struct virtq *q, const struct virtio_buf *bufs, unsigned n);
/* Make descriptor `head` visible to the device (a raw avail-ring publish, for
 * hand-built chains). */
void virtq_publish(struct virtq *q, uint16_t head);
void virtq_notify(struct virtq *q);
/* Take one used entry: returns its head (and *len) and frees the chain, or
 * -1 if the device has not used anything new. */
int virtq_get_used(struct virtq *q, uint32_t *len);

/* Post a chain, notify, and spin until the device returns it.  Returns the
 * used length.  After `VIRTIO_SPIN_LIMIT` spins, prints a line and exits with
 * VIRTIO_EXIT_TIMEOUT. */
uint32_t virtio_request(struct virtq *q, const struct virtio_buf *bufs, unsigned n);
/* Spin (bounded as above) until something is used. */
int virtq_wait_used(struct virtq *q, uint32_t *len);

/* Route the device's IRQ (0-15) to a handler that acknowledges
 * InterruptStatus and unmask it at the PIC; virtq_wait_used_irq() then sleeps
 * with `hlt` until the device uses a buffer.  Unbounded: it is for waiting on
 * host input.  A device with no PIC line (irq >= 16) is polled instead. */
void virtio_irq_enable(struct virtio_dev *d);
int virtq_wait_used_irq(struct virtq *q, uint32_t *len);

/* Read-consistent device config access (ConfigGeneration retry loop).
 * 64-bit fields are read as two 32-bit halves, as the MMIO transport asks. */
uint64_t virtio_config_read64(struct virtio_dev *d, unsigned off);
void virtio_config_read_bytes(struct virtio_dev *d, unsigned off, uint8_t *buf, unsigned n);

/* 64-bit FNV-1a. */
uint64_t fnv1a(const void *p, size_t n);

#endif
