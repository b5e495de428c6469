/* Minimal C KVM exit loop: the baseline rrvmm's Python loop is measured against.
 *
 * Reads a boot image written by bench/pio_exits.py (RAM contents and the entry state
 * rrvmm's own loader computed), runs it on one vCPU, and answers port I/O the way the
 * guest needs: COM1 LSR reads "transmitter empty", writes to COM1 go to stdout, a write
 * to 0xf4 ends the run. Prints the exit count and the exits per second.
 *
 * Image format (little endian): u64 memory size, u64 entry rip, u64 rax, u64 rbx,
 * then records of (u64 gpa, u64 length, bytes) until EOF.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(2); }

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void flat(struct kvm_segment *s, uint16_t sel, uint8_t type) {
	memset(s, 0, sizeof *s);
	s->base = 0; s->limit = 0xffffffff; s->selector = sel; s->type = type;
	s->present = 1; s->db = 1; s->s = 1; s->g = 1;
}

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: %s IMAGE\n", argv[0]); return 2; }
	FILE *f = fopen(argv[1], "rb");
	if (!f) die("image");
	uint64_t hdr[4];
	if (fread(hdr, 8, 4, f) != 4) die("image header");
	uint64_t memsize = hdr[0];
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000);
	uint8_t *mem = mmap(NULL, memsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	uint64_t rec[2];
	while (fread(rec, 8, 2, f) == 2) {
		if (rec[0] + rec[1] > memsize || fread(mem + rec[0], 1, rec[1], f) != rec[1]) die("image body");
	}
	fclose(f);
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = memsize, .userspace_addr = (uint64_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) die("KVM_CREATE_VCPU");
	struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[256]; } cpuid = {.c.nent = 256};
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
	flat(&sregs.cs, 0x10, 0xb);
	flat(&sregs.ds, 0x18, 0x3); sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.gdt.base = 0x8000; sregs.gdt.limit = 31;
	sregs.cr0 = 0x11; sregs.cr3 = 0; sregs.cr4 = 0; sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = hdr[1], .rax = hdr[2], .rbx = hdr[3], .rflags = 2};
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	uint64_t exits = 0;
	double t0 = now();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
		exits++;
		if (run->exit_reason != KVM_EXIT_IO) {
			fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
			return 1;
		}
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		if (run->io.direction == KVM_EXIT_IO_IN) {
			memset(data, run->io.port == 0x3fd ? 0x60 : 0xff, run->io.size * run->io.count);
		} else if (run->io.port == 0x3f8) {
			fwrite(data, 1, run->io.count, stdout);
		} else if (run->io.port == 0xf4) {
			break;
		}
	}
	double dt = now() - t0;
	fflush(stdout);
	fprintf(stderr, "c-loop exits=%llu seconds=%.3f exits_per_s=%.0f\n",
		(unsigned long long)exits, dt, exits / dt);
	return 0;
}
