/*
 * odirect-cma: the CMA crashkernel scenarios' workload (sample-dumps/generate, scenarios
 * cma-inflight and cma-control). It finds an anonymous buffer whose pages all lie in the
 * crashkernel CMA range(s) the kernel reserved for the capture kernel (crashkernel=SIZE,cma:
 * lent to movable allocations such as these until a crash), and reads the NVMe namespace
 * into it with one large O_DIRECT pread() in a thread. O_DIRECT pins the pages for the
 * I/O only (FOLL_PIN without FOLL_LONGTERM), so they stay in CMA; the factory throttles
 * QEMU's drive so that the read's commands are still queued at the controller when the
 * kernel crashes, and its data lands after the 10 s crash_cma_clear_pending_dma() wait,
 * in memory the capture kernel boots on. Without CMA ranges (cma-control) the first
 * buffer is taken as it comes.
 *
 * Where in the CMA range: its lowest quarter (--low-percent 25), because the capture kernel
 * fills its memory from the top. The CMA range is its highest memory (above 4 GiB, the crash
 * reservation below), memblock allocates top-down (the memory map, page tables, per-CPU
 * areas) and the buddy allocator hands out the last-freed, highest pages first. A buffer
 * near the top (where this kernel's first CMA pages come from) had the data land on the
 * capture kernel's own early allocations: three runs of three hung before /init on a
 * loaded host. This kernel hands out CMA pages from the top too, and interleaved with
 * other pages once the top is taken, so no chunk of the bottom is all CMA: the probe
 * touches chunks (keeping them) until it has seen enough CMA pages in the lowest quarter
 * (or CMA runs out, or --probe-mib), takes the lowest CMA pages it saw, and moves them
 * into one buffer with mremap (a page keeps its frame); the rest is unmapped.
 *
 *   odirect-cma --dev /dev/nvme0n1 --truth /out/cma-truth.json [--size-mib 64]
 *               [--offset 0] [--probe-mib 2048] [--low-percent 25] [--marker-fd 9]
 *               [--cma-ranges /sys/kernel/kexec_crash_cma_ranges]
 *
 * It writes its ground truth (pid, buffer address, the physical page of every 4 KiB of the
 * buffer from /proc/self/pagemap, the CMA ranges as the kernel printed them, the read's
 * device offset and length) once the read's first block has landed in the buffer and its
 * last has not, then the marker "odirect read in flight", and waits for the crash.
 *
 * Built by the factory with gcc -static -O2 -pthread into the first kernel's initramfs
 * (never committed); run as root (pagemap shows PFNs to CAP_SYS_ADMIN only).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUEST_PROGRAM "odirect-cma"
#include "guest-util.h"

#define PAGE 4096UL
#define MAX_RANGES 8
#define MAX_CHUNKS 256
/* what the buffer holds before the read: the disk's blocks start with "DUMPKIT-CMA-NVME" */
static const char SENTINEL[] = "odirect-cma sentinel, not yet read from the disk";

static double uptime(void)
{
	double up = -1;
	FILE *f = fopen("/proc/uptime", "r");
	if (f) {
		if (fscanf(f, "%lf", &up) != 1)
			up = -1;
		fclose(f);
	}
	return up;
}

struct range { uint64_t start, end; };          /* inclusive end, as the kernel prints it */
static struct range cma[MAX_RANGES];
static int ncma;
static char cma_text[512];

/* /sys/kernel/kexec_crash_cma_ranges: "%08llx-%08llx\n" per range (kernel/kexec_core.c) */
static void read_cma_ranges(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (errno == ENOENT)
			return;                         /* a kernel without the attribute */
		die("%s: %s", path, strerror(errno));
	}
	size_t n = fread(cma_text, 1, sizeof cma_text - 1, f);
	cma_text[n] = 0;
	fclose(f);
	char *p = cma_text;
	while (*p && ncma < MAX_RANGES) {
		unsigned long long s, e;
		int used;
		if (sscanf(p, "%llx-%llx%n", &s, &e, &used) != 2)
			break;
		cma[ncma].start = s;
		cma[ncma].end = e;
		ncma++;
		p += used;
		while (*p == '\n' || *p == ' ')
			p++;
	}
}

static int in_cma(uint64_t phys)
{
	for (int i = 0; i < ncma; i++)
		if (phys >= cma[i].start && phys + PAGE - 1 <= cma[i].end)
			return 1;
	return 0;
}

struct candidate {
	uint64_t phys;
	char *vaddr;
};

static int by_phys(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	return x->phys < y->phys ? -1 : x->phys > y->phys;
}

/* how far up its CMA range a page lies, in percent (0: the range's first page) */
static unsigned cma_percent(uint64_t phys)
{
	for (int i = 0; i < ncma; i++)
		if (phys >= cma[i].start && phys + PAGE - 1 <= cma[i].end)
			return (unsigned)((phys - cma[i].start) * 100 / (cma[i].end - cma[i].start + 1));
	return 100;
}

/* the physical address of every 4 KiB page of [p, p+size) */
static void read_pagemap(void *p, size_t size, uint64_t *phys)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		die("/proc/self/pagemap: %s", strerror(errno));
	size_t n = size / PAGE;
	uint64_t *ent = malloc(n * 8);
	if (!ent)
		die("out of memory");
	off_t off = (off_t)((uintptr_t)p / PAGE) * 8;
	size_t done = 0;
	while (done < n * 8) {
		ssize_t got = pread(fd, (char *)ent + done, n * 8 - done, off + done);
		if (got <= 0)
			die("/proc/self/pagemap read: %s", got < 0 ? strerror(errno) : "short read");
		done += got;
	}
	close(fd);
	for (size_t i = 0; i < n; i++) {
		uint64_t e = ent[i];
		if (!(e >> 63) || !(e & ((UINT64_C(1) << 55) - 1)))
			die("page %zu not present in pagemap (0x%" PRIx64 "; PFNs need CAP_SYS_ADMIN)", i, e);
		phys[i] = (e & ((UINT64_C(1) << 55) - 1)) * PAGE;
	}
	free(ent);
}

static unsigned cma_percent(uint64_t phys);
static void *touch(size_t size);

/* A buffer of size bytes made of the lowest CMA pages the probe finds (see the top):
 * phys gets its pages, *top how far up the CMA range the highest one lies (percent). */
static void *low_cma_buffer(size_t size, uint64_t *phys, unsigned long size_mib, unsigned long probe_mib,
			    unsigned long low_percent, size_t *chunk_in_cma, int *chunks, unsigned *top)
{
	size_t npages = size / PAGE, cap = (probe_mib / size_mib) * npages, n = 0, low = 0;
	struct candidate *c = malloc((cap ? cap : 1) * sizeof *c);
	uint64_t *ph = malloc(npages * 8);
	char *chunk_va[MAX_CHUNKS];
	if (!c || !ph)
		die("out of memory");
	while (*chunks < MAX_CHUNKS && (*chunks + 1) * size_mib <= probe_mib) {
		char *p = touch(size);
		read_pagemap(p, size, ph);
		size_t inside = 0;
		for (size_t i = 0; i < npages; i++) {
			if (!in_cma(ph[i]))
				continue;
			c[n++] = (struct candidate){ph[i], p + i * PAGE};
			inside++;
			low += cma_percent(ph[i]) < low_percent;
		}
		chunk_va[*chunks] = p;
		chunk_in_cma[(*chunks)++] = inside;
		if (low >= npages || (!inside && n >= npages))
			break;                  /* enough low pages, or CMA has run out */
	}
	if (n < npages)
		die("%zu CMA pages after touching %lu MiB, fewer than the buffer's %zu", n, *chunks * size_mib, npages);
	qsort(c, n, sizeof *c, by_phys);
	char *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (dst == MAP_FAILED)
		die("mmap %zu bytes: %s", size, strerror(errno));
	for (size_t i = 0; i < npages; i++)
		if (mremap(c[i].vaddr, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, dst + i * PAGE) == MAP_FAILED)
			die("mremap of page %zu (phys 0x%" PRIx64 "): %s", i, c[i].phys, strerror(errno));
	*top = cma_percent(c[npages - 1].phys);
	for (int k = 0; k < *chunks; k++)         /* the probe's other pages back to the kernel */
		munmap(chunk_va[k], size);
	read_pagemap(dst, size, phys);
	for (size_t i = 0; i < npages; i++)
		if (phys[i] != c[i].phys)
			die("page %zu is at 0x%" PRIx64 " after mremap, not 0x%" PRIx64, i, phys[i], c[i].phys);
	free(c);
	free(ph);
	return dst;
}

static void *touch(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap %zu bytes: %s", size, strerror(errno));
	/* 4 KiB pages, one pin and one PRP entry each (no transparent huge pages) */
	if (madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	for (size_t off = 0; off < size; off += PAGE)
		memcpy((char *)p + off, SENTINEL, sizeof SENTINEL);
	return p;
}

struct reader {
	int fd;
	void *buf;
	size_t size;
	off_t offset;
	volatile int done;
	volatile ssize_t got;
	volatile int err;
	double started, finished;
};

static void *read_thread(void *arg)
{
	struct reader *r = arg;
	r->started = now();
	ssize_t got = pread(r->fd, r->buf, r->size, r->offset);
	r->err = got < 0 ? errno : 0;
	r->got = got;
	r->finished = now();
	r->done = 1;
	return NULL;
}

static void print_runs(FILE *f, const uint64_t *phys, size_t n)
{
	fprintf(f, "[");
	size_t i = 0;
	int first = 1;
	while (i < n) {
		size_t j = i + 1;
		while (j < n && phys[j] == phys[j - 1] + PAGE)
			j++;
		fprintf(f, "%s[%" PRIu64 ", %zu]", first ? "" : ", ", phys[i], (j - i) * PAGE);
		first = 0;
		i = j;
	}
	fprintf(f, "]");
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fprintf(f, "\\n");
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void read_small(const char *path, char *out, size_t len)
{
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = 0;
	fclose(f);
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *truth = NULL, *ranges_path = "/sys/kernel/kexec_crash_cma_ranges";
	unsigned long size_mib = 64, probe_mib = 2048, low_percent = 25;
	unsigned long long offset = 0;
	static const struct option opts[] = {
		{"dev", required_argument, 0, 'd'}, {"truth", required_argument, 0, 't'},
		{"size-mib", required_argument, 0, 's'}, {"offset", required_argument, 0, 'o'},
		{"probe-mib", required_argument, 0, 'p'}, {"marker-fd", required_argument, 0, 'm'},
		{"cma-ranges", required_argument, 0, 'c'}, {"low-percent", required_argument, 0, 'l'},
		{0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dev = optarg; break;
		case 't': truth = optarg; break;
		case 's': size_mib = strtoul(optarg, NULL, 0); break;
		case 'o': offset = strtoull(optarg, NULL, 0); break;
		case 'p': probe_mib = strtoul(optarg, NULL, 0); break;
		case 'm': marker_fd = atoi(optarg); break;
		case 'c': ranges_path = optarg; break;
		case 'l': low_percent = strtoul(optarg, NULL, 0); break;
		default: die("usage: odirect-cma --dev DEV --truth FILE [--size-mib N] [--offset BYTES] "
			     "[--probe-mib N] [--marker-fd FD] [--cma-ranges FILE]");
		}
	}
	if (!dev || !truth || !size_mib || offset % PAGE)
		die("usage: odirect-cma --dev DEV --truth FILE [--size-mib N] [--offset BYTES] "
		    "[--probe-mib N] [--marker-fd FD] [--cma-ranges FILE]");
	double t0 = now(), up0 = uptime();
	read_cma_ranges(ranges_path);
	size_t size = size_mib << 20, npages = size / PAGE;
	uint64_t *phys = malloc(npages * 8);
	if (!phys)
		die("out of memory");

	/* Movable allocations come from CMA when more than half of a zone's free memory is
	 * CMA (mm/page_alloc.c __rmqueue), or when the rest is used up; without CMA ranges
	 * (the control) the first buffer as it comes */
	void *buf;
	unsigned buf_top = 0;
	size_t chunk_in_cma[MAX_CHUNKS];
	int chunks = 0;
	if (ncma)
		buf = low_cma_buffer(size, phys, size_mib, probe_mib, low_percent, chunk_in_cma, &chunks, &buf_top);
	else {
		buf = touch(size);
		read_pagemap(buf, size, phys);
		chunk_in_cma[chunks++] = 0;
	}
	double probe_s = now() - t0;
	uint64_t *probed = malloc(npages * 8);
	if (!probed)
		die("out of memory");
	memcpy(probed, phys, npages * 8);

	int fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die("open %s O_DIRECT: %s", dev, strerror(errno));
	struct reader r = {.fd = fd, .buf = buf, .size = size, .offset = (off_t)offset};
	pthread_t th;
	double up_start = uptime();
	if (pthread_create(&th, NULL, read_thread, &r))
		die("pthread_create failed");
	/* the first block landing says the device has the commands; the last one still
	 * holding the sentinel says the read is in flight */
	volatile char *first = buf, *last = (char *)buf + size - PAGE;
	double deadline = now() + 60;
	while (!memcmp((const char *)first, SENTINEL, sizeof SENTINEL)) {
		if (r.done)
			die("pread returned %zd (%s) before the first block landed", (ssize_t)r.got, strerror(r.err));
		if (now() > deadline)
			die("the read's first block did not land within 60 s");
		usleep(20000);
	}
	double first_landed = now();
	if (r.done || memcmp((const char *)last, SENTINEL, sizeof SENTINEL))
		die("the read completed before its ground truth was written (the drive is not throttled?)");
	/* the pages the device writes: pinned now (FOLL_PIN), so they cannot have moved since */
	read_pagemap(buf, size, phys);
	size_t inside = 0, moved = 0;
	for (size_t i = 0; i < npages; i++) {
		inside += in_cma(phys[i]);
		moved += phys[i] != probed[i];
	}
	size_t landed = 0;
	for (size_t off = 0; off < size; off += PAGE)
		landed += memcmp((char *)buf + off, SENTINEL, sizeof SENTINEL) != 0;
	char inflight[64], max_sectors[32], max_hw_sectors[32], comm[32];
	read_small("/sys/block/nvme0n1/inflight", inflight, sizeof inflight);
	read_small("/sys/block/nvme0n1/queue/max_sectors_kb", max_sectors, sizeof max_sectors);
	read_small("/sys/block/nvme0n1/queue/max_hw_sectors_kb", max_hw_sectors, sizeof max_hw_sectors);
	read_small("/proc/self/comm", comm, sizeof comm);

	char tmp[512];
	snprintf(tmp, sizeof tmp, "%s.partial", truth);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "{\"pid\": %d, \"comm\": ", getpid());
	json_string(f, comm);
	fprintf(f, ",\n \"cma_ranges\": [");
	for (int i = 0; i < ncma; i++)
		fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", i ? ", " : "", cma[i].start, cma[i].end);
	fprintf(f, "], \"cma_ranges_source\": ");
	json_string(f, ranges_path);
	fprintf(f, ", \"cma_ranges_text\": ");
	json_string(f, cma_text);
	fprintf(f, ",\n \"read\": {\"device\": ");
	json_string(f, dev);
	fprintf(f, ", \"call\": \"pread\", \"flags\": \"O_RDONLY|O_DIRECT\", \"offset\": %llu, \"length\": %zu,"
		" \"pin\": \"FOLL_PIN, not FOLL_LONGTERM (direct I/O)\", \"started_uptime_s\": %.3f,"
		" \"first_block_landed_after_s\": %.3f, \"pages_landed_at_truth\": %zu, \"done_at_truth\": false,"
		" \"inflight_at_truth\": ", offset, size, up_start, first_landed - r.started, landed);
	json_string(f, inflight);
	fprintf(f, ", \"max_sectors_kb\": ");
	json_string(f, max_sectors);
	fprintf(f, ", \"max_hw_sectors_kb\": ");
	json_string(f, max_hw_sectors);
	fprintf(f, "},\n \"buffer\": {\"vaddr\": %" PRIu64 ", \"size\": %zu, \"page_size\": %lu, \"pages\": %zu,"
		" \"pages_in_cma\": %zu, \"moved_since_probe\": %zu, \"transparent_huge_pages\": false,\n  \"phys\": ",
		(uint64_t)(uintptr_t)buf, size, PAGE, npages, inside, moved);
	print_runs(f, phys, npages);
	fprintf(f, "},\n \"probe\": {\"chunk_mib\": %lu, \"chunks\": %d, \"low_percent\": %lu,"
		" \"buffer_top_percent_of_cma\": %u, \"pages_in_cma\": [", size_mib, chunks, low_percent,
		ncma ? buf_top : 0);
	for (int i = 0; i < chunks; i++)
		fprintf(f, "%s%zu", i ? ", " : "", chunk_in_cma[i]);
	fprintf(f, "], \"probe_s\": %.3f},\n \"started_uptime_s\": %.3f, \"written_uptime_s\": %.3f}\n",
		probe_s, up0, uptime());
	if (fclose(f))
		die("writing %s: %s", tmp, strerror(errno));
	if (rename(tmp, truth))
		die("rename %s: %s", tmp, strerror(errno));
	marker("odirect read in flight (pid %d, %zu of %zu pages in CMA, %zu landed, probe %d chunks %.1fs)",
	       getpid(), inside, npages, landed, chunks, probe_s);
	/* the kernel crashes now; should it not, say when the read ended */
	pthread_join(th, NULL);
	fprintf(stderr, "odirect-cma: pread returned %zd after %.1f s\n", (ssize_t)r.got, r.finished - r.started);
	for (;;)
		pause();
}
