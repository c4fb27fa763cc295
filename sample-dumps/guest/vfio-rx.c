/*
 * vfio-rx: a small userspace driver for the sample guest's e1000e (QEMU's 82574
 * emulation), through vfio-pci and a type1v2 container, for dumpkit's sample factory
 * (sample-dumps/generate, scenarios vfio-*). It keeps an RX ring receiving the factory's
 * UDP stream until the kernel crashes, so the NIC's DMA goes on into the capture
 * kernel's time at IOVAs of this process's mappings; it records what it mapped (IOVA,
 * virtual address, the physical pages from /proc/self/pagemap) as ground truth.
 *
 *   vfio-rx --bdf 0000:02:00.0 --group 10 --truth /out/vfio-truth.json [--big-mib 1024]
 *           [--big-aliases 4] [--marker-fd 9] [--truth-after 16] [--vm] [--iommufd] [--nvme]
 *
 * --big-aliases N maps the --big-mib region at N consecutive IOVA windows from BIG_IOVA
 * (type1 allows one process's pages in several mappings): a domain of N times as many
 * 4 KiB PTEs for the same pinned memory.
 *
 * --vm [--vm-ram-mib N]: the NIC is assigned to a KVM virtual machine (of N MiB) instead, whose own driver programs
 * and recycles the ring in guest RAM, mapped at IOVA = guest-physical address (kvm-vm.h).
 *
 * --iommufd: the device through iommufd instead of the type1 container (kernels >= 6.6
 * with CONFIG_VFIO_DEVICE_CDEV): its cdev /dev/vfio/devices/vfioN (N from
 * /sys/bus/pci/devices/BDF/vfio-dev/) bound to /dev/iommu (VFIO_DEVICE_BIND_IOMMUFD), an
 * IOAS (IOMMU_IOAS_ALLOC) the device is attached to (VFIO_DEVICE_ATTACH_IOMMUFD_PT: the
 * kernel allocates its paging domain, the hwpt), then the same mappings at the same IOVAs
 * (IOMMU_IOAS_MAP with IOMMU_IOAS_MAP_FIXED_IOVA), and the same RX ring. Attached before
 * mapping, as users do: IOMMU_IOAS_IOVA_RANGES then says which IOVAs the device's domain
 * takes, and IOMMU_IOAS_MAP pins the pages into it at once (read from pagemap after).
 *
 * --nvme: the device is an NVMe controller instead, kept reading (vfio-nvme.h); with
 * --iommufd too, it goes through iommufd.
 *
 * The ground truth is written once --truth-after packets have landed in the ring (so that
 * descriptors have been recycled at least once), or 10 s after the first if fewer come.
 *
 * Built by the factory with gcc -static -O2 into the guest's initramfs.
 *
 * The RX setup follows the 82574 datasheet's legacy receive path as QEMU's e1000e
 * emulation implements it (hw/net/e1000e_core.c, e1000x_common.c): a packet is accepted
 * when STATUS.LU, RCTL.EN and the Command register's Bus Master are set
 * (e1000x_rx_ready); legacy 16-byte descriptors when RFCTL.EXTEN is clear and
 * RCTL.DTYP is 0; the buffer size from RCTL.BSIZE/BSEX (0/0: 2048) and the descriptor
 * length are computed when RCTL is written with EN, so RFCTL goes first; the device owns
 * the descriptors from RDH up to RDT (RDH == RDT: none); writing RDT or RCTL with EN
 * flushes the packets QEMU queued meanwhile. Interrupts stay masked (IMS 0): nothing
 * here takes them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

/* The iommufd uapi, from 6.12's include/uapi/linux/iommufd.h and the VFIO cdev ioctls
 * from its include/uapi/linux/vfio.h (6.6+), for hosts whose linux-libc-dev predates them
 * (bookworm's 6.1 has neither): the same layouts and numbers. */
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#define IOMMUFD_CMD_IOAS_ALLOC 0x81
#define IOMMUFD_CMD_IOAS_IOVA_RANGES 0x84
#define IOMMUFD_CMD_IOAS_MAP 0x85
struct iommu_ioas_alloc {
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
struct iommu_iova_range {
	__aligned_u64 start;
	__aligned_u64 last;
};
struct iommu_ioas_iova_ranges {
	__u32 size;
	__u32 ioas_id;
	__u32 num_iovas;
	__u32 __reserved;
	__aligned_u64 allowed_iovas;
	__aligned_u64 out_iova_alignment;
};
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
enum iommufd_ioas_map_flags {
	IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,
	IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,
	IOMMU_IOAS_MAP_READABLE = 1 << 2,
};
struct iommu_ioas_map {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
#endif
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
struct vfio_device_attach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif

#define GUEST_PROGRAM "vfio-rx"
#include "guest-util.h"

#define PAGE 4096UL
#define NDESC 4096u
#define DESC_SIZE 16u
#define BUF_SIZE 2048u
/* IOVAs: inside the VT-d aperture (39 bits), away from the MSI window 0xfee00000 */
#define RX_IOVA UINT64_C(0x10000000)          /* descriptors, then the buffers */
#define BIG_IOVA UINT64_C(0x100000000)        /* the mapped-only region (--big-mib) */
#define MAX_ALIASES 8

/* e1000e registers (BAR0 offsets) and bits */
#define E1000_CTRL 0x00000
#define E1000_STATUS 0x00008
#define E1000_ICR 0x000C0
#define E1000_IMC 0x000D8
#define E1000_RCTL 0x00100
#define E1000_RDBAL0 0x02800
#define E1000_RDBAH0 0x02804
#define E1000_RDLEN0 0x02808
#define E1000_RDH0 0x02810
#define E1000_RDT0 0x02818
#define E1000_RXCSUM 0x05000
#define E1000_RFCTL 0x05008
#define E1000_MRQC 0x05818
#define CTRL_SLU (1u << 6)
#define CTRL_RST (1u << 26)
#define CTRL_PHY_RST (1u << 31)
#define STATUS_LU (1u << 1)
#define RCTL_EN (1u << 1)
#define RCTL_UPE (1u << 3)
#define RCTL_MPE (1u << 4)
#define RCTL_BAM (1u << 15)
#define RCTL_SECRC (1u << 26)
#define RXD_STAT_DD 0x01

struct rx_desc {                 /* legacy receive descriptor */
	uint64_t addr;
	uint16_t length;
	uint16_t csum;
	uint8_t status;
	uint8_t errors;
	uint16_t special;
};

/* where the ring and its buffers are: RX_IOVA for the process's own ring, guest-physical
 * addresses for a VM's */
static uint64_t ring_iova = RX_IOVA, bufs_iova = RX_IOVA + NDESC * DESC_SIZE;
/* the truth's "device": the e1000e's RX ring, or (--nvme) the NVMe's queues */
static const char *device_kind = "e1000e";

/* BAR0: mmap'd when vfio-pci offers it, else through the region with pread/pwrite */
static volatile uint32_t *bar;
static int device_fd;
static uint64_t bar_off;

/* --iommufd: the objects the device's DMA goes through, for the ground truth */
static struct {
	int on, iommufd, ioas_id, hwpt_id, devid;
	char cdev[64];
} ifd;

static uint32_t rd(uint32_t reg)
{
	uint32_t v;
	if (bar)
		return bar[reg / 4];
	if (pread(device_fd, &v, 4, bar_off + reg) != 4)
		die("BAR0 read at 0x%x: %s", reg, strerror(errno));
	return v;
}

static void wr(uint32_t reg, uint32_t v)
{
	if (bar) {
		bar[reg / 4] = v;
		return;
	}
	if (pwrite(device_fd, &v, 4, bar_off + reg) != 4)
		die("BAR0 write at 0x%x: %s", reg, strerror(errno));
}

/* a register write read back: what QEMU's emulation kept must be what was written */
static void wr_checked(const char *name, uint32_t reg, uint32_t v, uint32_t mask)
{
	wr(reg, v);
	uint32_t got = rd(reg);
	if ((got & mask) != (v & mask))
		die("%s (0x%x) reads 0x%08x after writing 0x%08x", name, reg, got, v);
}

struct mapping {
	const char *use;
	uint64_t iova, size;
	void *vaddr;
	uint64_t *pfn;              /* per 4 KiB page, from /proc/self/pagemap */
	double populate_s, map_s, pagemap_s;
};

static void *populate(size_t size, int nohuge, const char *what)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap %s (%zu bytes): %s", what, size, strerror(errno));
	/* no transparent huge pages: the pages are 4 KiB each, as the IOMMU maps them */
	if (nohuge && madvise(p, size, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE) %s: %s", what, strerror(errno));
	/* mlock faults every page in (written: private anonymous pages of their own) */
	if (mlock(p, size))
		die("mlock %s (%zu bytes): %s", what, size, strerror(errno));
	for (size_t off = 0; off < size; off += PAGE)
		((volatile char *)p)[off] = 0;
	return p;
}

static void map_dma(int container, struct mapping *m)
{
	if (ifd.on) {
		struct iommu_ioas_map map = {
			.size = sizeof map,
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
			.ioas_id = ifd.ioas_id,
			.user_va = (uintptr_t)m->vaddr,
			.length = m->size,
			.iova = m->iova,
		};
		double t = now();
		if (ioctl(ifd.iommufd, IOMMU_IOAS_MAP, &map))
			die("IOMMU_IOAS_MAP %s at IOVA 0x%" PRIx64 " (+0x%" PRIx64 "): %s", m->use, m->iova, m->size,
			    strerror(errno));
		if (map.iova != m->iova)
			die("IOMMU_IOAS_MAP put %s at IOVA 0x%llx, not 0x%" PRIx64, m->use, (unsigned long long)map.iova,
			    m->iova);
		m->map_s = now() - t;
		return;
	}
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof map,
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)m->vaddr,
		.iova = m->iova,
		.size = m->size,
	};
	double t = now();
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map))
		die("VFIO_IOMMU_MAP_DMA %s at IOVA 0x%" PRIx64 " (+0x%" PRIx64 "): %s", m->use, m->iova, m->size,
		    strerror(errno));
	m->map_s = now() - t;
}

/* the physical page of every 4 KiB, read after VFIO_IOMMU_MAP_DMA (or IOMMU_IOAS_MAP into
 * the attached domain) pinned them (a long-term
 * pin may migrate a page first, and a pinned page does not move) */
static void read_pagemap(struct mapping *m)
{
	double t = now();
	size_t n = m->size / PAGE;
	m->pfn = calloc(n, sizeof *m->pfn);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || !m->pfn)
		die("/proc/self/pagemap: %s", strerror(errno));
	uint64_t first = (uintptr_t)m->vaddr / PAGE;
	for (size_t done = 0; done < n;) {
		size_t chunk = n - done > 65536 ? 65536 : n - done;
		ssize_t got = pread(fd, m->pfn + done, chunk * 8, (first + done) * 8);
		if (got != (ssize_t)(chunk * 8))
			die("/proc/self/pagemap read: %s", got < 0 ? strerror(errno) : "short read");
		done += chunk;
	}
	close(fd);
	for (size_t i = 0; i < n; i++) {
		uint64_t e = m->pfn[i];
		if (!(e >> 63) || !(e & ((1ULL << 55) - 1)))
			die("%s page %zu not present in pagemap (0x%" PRIx64 "; PFNs need CAP_SYS_ADMIN)", m->use, i, e);
		m->pfn[i] = e & ((1ULL << 55) - 1);
	}
	m->pagemap_s = now() - t;
}

/* 2 MiB IOVA blocks the IOMMU driver could map with one 2 MiB entry if superpages are on:
 * physically contiguous and 2 MiB-aligned (type1 maps each contiguous run in one call) */
static size_t superpage_eligible(const struct mapping *m)
{
	size_t n = m->size / PAGE, blocks = 0;
	for (size_t i = 0; i + 512 <= n; i += 512) {
		if ((m->iova + i * PAGE) % (2UL << 20) || m->pfn[i] % 512)
			continue;
		size_t j = 1;
		while (j < 512 && m->pfn[i + j] == m->pfn[i] + j)
			j++;
		blocks += j == 512;
	}
	return blocks;
}

static void write_phys_runs(FILE *f, const struct mapping *m)
{
	size_t n = m->size / PAGE, runs = 0;
	fprintf(f, "[");
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && m->pfn[j] == m->pfn[j - 1] + 1)
			j++;
		fprintf(f, "%s[%" PRIu64 ", %zu]", runs++ ? ", " : "", m->pfn[i] * PAGE, (j - i) * PAGE);
		i = j;
	}
	fprintf(f, "]");
}

/* the e1000e's RX ring, for the ground truth */
static const char *ring_json(uint32_t rdh, uint32_t rdt, uint64_t received)
{
	static char json[512];
	snprintf(json, sizeof json,
		 "\"ring\": {\"iova\": %" PRIu64 ", \"descriptors\": %u, \"descriptor_size\": %u, \"type\": \"legacy\","
		 " \"buffer_size\": %u, \"buffers_iova\": %" PRIu64 ", \"rdh\": %u, \"rdt\": %u, \"received\": %" PRIu64
		 ", \"recycle_interval_ms\": 10}",
		 ring_iova, NDESC, DESC_SIZE, BUF_SIZE, bufs_iova, rdh, rdt, received);
	return json;
}

/* device_json: the device's own members ("ring": ... for the e1000e, "nvme": ... ) */
static void write_truth(const char *path, const char *bdf, int group, struct mapping *maps, int nmaps,
			const char *device_json, uint64_t bar0_phys, uint64_t bar0_size,
			const char *ranges, double setup_s, const char *vm_json)
{
	char tmp[4096], comm[64] = "";
	snprintf(tmp, sizeof tmp, "%s.partial", path);
	FILE *c = fopen("/proc/self/comm", "r");
	if (c) {
		if (fgets(comm, sizeof comm, c))
			comm[strcspn(comm, "\n")] = 0;
		fclose(c);
	}
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	fprintf(f, "{\n \"pid\": %d,\n \"comm\": \"%s\",\n \"bdf\": \"%s\",\n \"iommu_group\": %d,\n"
		" \"container\": \"%s\",\n \"driver\": \"vfio-pci\",\n \"device\": \"%s\",\n", getpid(), comm, bdf, group,
		ifd.on ? "iommufd" : "type1v2", device_kind);
	if (ifd.on)
		fprintf(f, " \"iommufd\": {\"cdev\": \"%s\", \"devid\": %d, \"ioas_id\": %d, \"hwpt_id\": %d,"
			" \"iommufd_fd\": %d, \"device_fd\": %d, \"attached_before_map\": true},\n",
			ifd.cdev, ifd.devid, ifd.ioas_id, ifd.hwpt_id, ifd.iommufd, device_fd);
	fprintf(f, " \"mappings\": [\n");
	for (int k = 0; k < nmaps; k++) {
		struct mapping *m = &maps[k];
		fprintf(f, "  {\"use\": \"%s\", \"iova\": %" PRIu64 ", \"vaddr\": %" PRIu64 ", \"size\": %" PRIu64
			", \"prot\": \"rw\", \"page_size\": %lu, \"superpage_eligible_2m_blocks\": %zu,\n"
			"   \"populate_s\": %.3f, \"map_dma_s\": %.3f, \"pagemap_s\": %.3f,\n   \"phys\": ",
			m->use, m->iova, (uint64_t)(uintptr_t)m->vaddr, m->size, PAGE, superpage_eligible(m),
			m->populate_s, m->map_s, m->pagemap_s);
		write_phys_runs(f, m);
		fprintf(f, "}%s\n", k + 1 < nmaps ? "," : "");
	}
	fprintf(f, " ],\n");
	fprintf(f, " %s,\n", device_json);
	fprintf(f, " \"vm\": %s,\n", vm_json ? vm_json : "null");
	fprintf(f, " \"bar0_phys\": %" PRIu64 ",\n \"bar0_size\": %" PRIu64 ",\n", bar0_phys, bar0_size);
	fprintf(f, " \"iova_ranges\": %s,\n \"setup_s\": %.3f,\n \"written_uptime_s\": %.3f\n}\n", ranges, setup_s,
		up.tv_sec + up.tv_nsec / 1e9);
	if (fflush(f) || fsync(fileno(f)) || fclose(f))
		die("%s: %s", tmp, strerror(errno));
	if (rename(tmp, path))
		die("rename %s: %s", tmp, strerror(errno));
}

/* the IOVA ranges type1 accepts (VFIO_IOMMU_GET_INFO's capability chain), as JSON; each
 * of our mappings must lie inside one */
static void iommufd_iova_ranges(char *json, size_t len, struct mapping *maps, int nmaps);

static void iova_ranges(int container, char *json, size_t len, struct mapping *maps, int nmaps)
{
	if (ifd.on) {
		iommufd_iova_ranges(json, len, maps, nmaps);
		return;
	}
	size_t sz = 4096;
	struct vfio_iommu_type1_info *info = calloc(1, sz);
	info->argsz = sz;
	if (ioctl(container, VFIO_IOMMU_GET_INFO, info))
		die("VFIO_IOMMU_GET_INFO: %s", strerror(errno));
	struct vfio_iova_range *r = NULL;
	uint32_t nr = 0;
	if (info->flags & VFIO_IOMMU_INFO_CAPS && info->cap_offset) {
		for (uint32_t off = info->cap_offset; off && off < sz;) {
			struct vfio_info_cap_header *h = (void *)((char *)info + off);
			if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
				struct vfio_iommu_type1_info_cap_iova_range *c = (void *)h;
				r = c->iova_ranges;
				nr = c->nr_iovas;
			}
			off = h->next;
		}
	}
	size_t w = snprintf(json, len, "[");
	for (uint32_t i = 0; i < nr && w < len; i++)
		w += snprintf(json + w, len - w, "%s[%" PRIu64 ", %" PRIu64 "]", i ? ", " : "",
			      (uint64_t)r[i].start, (uint64_t)r[i].end);
	snprintf(json + (w < len ? w : len - 1), len - (w < len ? w : len - 1), "]");
	for (int k = 0; k < nmaps && nr; k++) {
		int inside = 0;
		for (uint32_t i = 0; i < nr; i++)
			inside |= maps[k].iova >= r[i].start && maps[k].iova + maps[k].size - 1 <= r[i].end;
		if (!inside)
			die("IOVA 0x%" PRIx64 " (+0x%" PRIx64 ") is outside type1's IOVA ranges %s", maps[k].iova,
			    maps[k].size, json);
	}
	free(info);
}

/* --iommufd: the IOVA ranges the IOAS allows now that the device is attached
 * (IOMMU_IOAS_IOVA_RANGES: the domain's aperture less the reserved regions) */
static void iommufd_iova_ranges(char *json, size_t len, struct mapping *maps, int nmaps)
{
	struct iommu_iova_range r[32];
	struct iommu_ioas_iova_ranges q = {.size = sizeof q, .ioas_id = ifd.ioas_id, .num_iovas = 32,
					   .allowed_iovas = (uintptr_t)r};
	if (ioctl(ifd.iommufd, IOMMU_IOAS_IOVA_RANGES, &q))
		die("IOMMU_IOAS_IOVA_RANGES: %s", strerror(errno));
	size_t w = snprintf(json, len, "[");
	for (uint32_t i = 0; i < q.num_iovas && w < len - 2; i++)
		w += snprintf(json + w, len - 2 - w, "%s[%" PRIu64 ", %" PRIu64 "]", i ? ", " : "",
			      (uint64_t)r[i].start, (uint64_t)r[i].last);
	w = w < len - 2 ? w : len - 2;
	json[w] = ']';
	json[w + 1] = 0;
	for (int k = 0; k < nmaps; k++) {
		int inside = 0;
		for (uint32_t i = 0; i < q.num_iovas; i++)
			inside |= maps[k].iova >= r[i].start && maps[k].iova + maps[k].size - 1 <= r[i].last;
		if (!inside)
			die("IOVA 0x%" PRIx64 " (+0x%" PRIx64 ") is outside the IOAS's IOVA ranges %s", maps[k].iova,
			    maps[k].size, json);
	}
}

/* --iommufd: the device's cdev (its name from sysfs), bound to a fresh iommufd, and an IOAS
 * it is attached to; the device fd goes to device_fd */
static void iommufd_open(const char *bdf)
{
	char path[256];
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	DIR *d = opendir(path);
	if (!d)
		die("%s: %s (no VFIO device cdev: CONFIG_VFIO_DEVICE_CDEV?)", path, strerror(errno));
	for (struct dirent *e; (e = readdir(d));)
		if (!strncmp(e->d_name, "vfio", 4))
			snprintf(ifd.cdev, sizeof ifd.cdev, "%.60s", e->d_name);
	closedir(d);
	if (!ifd.cdev[0])
		die("%s has no vfioN entry", path);
	snprintf(path, sizeof path, "/dev/vfio/devices/%s", ifd.cdev);
	device_fd = open(path, O_RDWR);
	if (device_fd < 0)
		die("%s: %s", path, strerror(errno));
	ifd.iommufd = open("/dev/iommu", O_RDWR);
	if (ifd.iommufd < 0)
		die("/dev/iommu: %s (CONFIG_IOMMUFD?)", strerror(errno));
	struct vfio_device_bind_iommufd bind = {.argsz = sizeof bind, .iommufd = ifd.iommufd};
	if (ioctl(device_fd, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		die("VFIO_DEVICE_BIND_IOMMUFD %s: %s", path, strerror(errno));
	ifd.devid = bind.out_devid;
	struct iommu_ioas_alloc alloc = {.size = sizeof alloc};
	if (ioctl(ifd.iommufd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOMMU_IOAS_ALLOC: %s", strerror(errno));
	ifd.ioas_id = alloc.out_ioas_id;
	struct vfio_device_attach_iommufd_pt attach = {.argsz = sizeof attach, .pt_id = ifd.ioas_id};
	if (ioctl(device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach))
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT to IOAS %d: %s", ifd.ioas_id, strerror(errno));
	ifd.hwpt_id = attach.pt_id;      /* out: the hwpt the kernel allocated for the IOAS */
}

#include "kvm-vm.h"
#include "vfio-nvme.h"

/* --vm: the VM runs its driver; this process serves its exits and writes the ground truth
 * once --truth-after packets have landed in the guest's ring */
static void run_vm(struct vm *vm, struct mapping *maps, int nmaps, uint64_t cfg_off, const char *truth,
		   const char *bdf, int group_id, uint64_t bar0_phys, uint64_t bar0_size, const char *ranges,
		   unsigned long truth_after, double t0)
{
	vm_boot(vm, maps[0].vaddr, maps[0].size, cfg_off);
	int written = 0;
	double start = now(), first_packet = 0;
	for (;;) {
		vm_run_until_hlt(vm);
		usleep(10000);
		uint32_t received = vm_param(vm, VP_RECEIVED);
		if (received && !first_packet)
			first_packet = now();
		if (!written && received && (received >= truth_after || now() - first_packet > 10)) {
			char vm_json[512];
			snprintf(vm_json, sizeof vm_json,
				 "{\"vmm_pid\": %d, \"vcpus\": 1, \"guest_ram_gpa\": 0, \"guest_ram_size\": %zu, "
				 "\"guest_ram_hva\": %" PRIu64 ", \"bar0_gpa\": %u, \"iova_is_gpa\": true, "
				 "\"ring_driven_by\": \"the VM's vCPU\", \"mmio_exits\": %" PRIu64 ", "
				 "\"io_exits\": %" PRIu64 ", \"hlt_exits\": %" PRIu64 "}",
				 getpid(), (size_t)maps[0].size, (uint64_t)(uintptr_t)maps[0].vaddr, VM_BAR0_GPA,
				 vm->mmio_exits, vm->io_exits, vm->hlt_exits);
			write_truth(truth, bdf, group_id, maps, nmaps,
				    ring_json(vm_param(vm, VP_RDH), vm_param(vm, VP_RDT), received), bar0_phys,
				    bar0_size, ranges, now() - t0, vm_json);
			written = 1;
			marker("vfio-rx dma running (pid %d, VM, rdh %u, rdt %u, received %u, setup %.1fs)", getpid(),
			       vm_param(vm, VP_RDH), vm_param(vm, VP_RDT), received, now() - t0);
		}
		if (!written && now() - start > 60)
			die("no packet reached the VM's ring in 60 s: driver state %u, RDH %u, STATUS 0x%08x, "
			    "RCTL 0x%08x", vm_param(vm, VP_STATE), rd(E1000_RDH0), rd(E1000_STATUS), rd(E1000_RCTL));
	}
}

static uint64_t sysfs_bar0(const char *bdf, uint64_t *size)
{
	char path[256];
	unsigned long long start = 0, end = 0;
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource", bdf);
	FILE *f = fopen(path, "r");
	if (!f || fscanf(f, "%llx %llx", &start, &end) != 2)
		die("%s: no BAR0", path);
	fclose(f);
	*size = end >= start && start ? end - start + 1 : 0;
	return start;
}

int main(int argc, char **argv)
{
	const char *bdf = NULL, *truth = NULL;
	int group_id = -1;
	unsigned long big_mib = 0, truth_after = 16, big_aliases = 1;
	int vm_mode = 0;
	unsigned long vm_ram_mib = 0;
	static const struct option opts[] = {
		{"bdf", required_argument, 0, 'b'}, {"group", required_argument, 0, 'g'},
		{"truth", required_argument, 0, 't'}, {"big-mib", required_argument, 0, 'B'},
		{"big-aliases", required_argument, 0, 'A'},
		{"marker-fd", required_argument, 0, 'm'}, {"truth-after", required_argument, 0, 'a'},
		{"vm", no_argument, 0, 'v'}, {"iommufd", no_argument, 0, 'I'},
		{"vm-ram-mib", required_argument, 0, 'R'}, {"nvme", no_argument, 0, 'N'}, {0, 0, 0, 0}};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'b': bdf = optarg; break;
		case 'g': group_id = atoi(optarg); break;
		case 't': truth = optarg; break;
		case 'B': big_mib = strtoul(optarg, NULL, 0); break;
		case 'A': big_aliases = strtoul(optarg, NULL, 0); break;
		case 'm': marker_fd = atoi(optarg); break;
		case 'a': truth_after = strtoul(optarg, NULL, 0); break;
		case 'v': vm_mode = 1; break;
		case 'R': vm_ram_mib = strtoul(optarg, NULL, 0); break;
		case 'I': ifd.on = 1; break;
		case 'N': device_kind = "nvme"; break;
		default: die("usage: vfio-rx --bdf BDF --group N --truth FILE [--big-mib MIB] [--marker-fd FD]");
		}
	}
	if (big_aliases < 1 || big_aliases > MAX_ALIASES)
		die("--big-aliases %lu: 1 to %d", big_aliases, MAX_ALIASES);
	if (vm_mode && big_mib)
		die("--vm and --big-mib: the VM's guest RAM is its only mapping");
	if (vm_mode && ifd.on)
		die("--vm and --iommufd: the VM is attached through the group");
	int nvme_mode = !strcmp(device_kind, "nvme");
	if (nvme_mode && (vm_mode || big_mib))
		die("--nvme: the NVMe's queues and buffers are its only mappings (no --vm, no --big-mib)");
	if (!bdf || group_id < 0 || !truth)
		die("usage: vfio-rx --bdf BDF --group N --truth FILE [--big-mib MIB] [--marker-fd FD] [--iommufd]");
	double t0 = now();
	int container = -1;
	struct vm vm = {0};
	if (ifd.on) {
		iommufd_open(bdf);
		goto memory;
	}

	/* container, group, type1v2, device */
	container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		die("/dev/vfio/vfio: %s", strerror(errno));
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		die("VFIO API version is not %d", VFIO_API_VERSION);
	if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		die("no VFIO_TYPE1v2_IOMMU (vfio_iommu_type1 not loaded?)");
	char gpath[64];
	snprintf(gpath, sizeof gpath, "/dev/vfio/%d", group_id);
	int group = open(gpath, O_RDWR);
	if (group < 0)
		die("%s: %s", gpath, strerror(errno));
	struct vfio_group_status st = {.argsz = sizeof st};
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &st))
		die("VFIO_GROUP_GET_STATUS: %s", strerror(errno));
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE))
		die("group %d is not viable (a device of the group not bound to vfio-pci?)", group_id);
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		die("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): %s", strerror(errno));
	if (vm_mode)
		vm_create(&vm, group);
	device_fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (device_fd < 0)
		die("VFIO_GROUP_GET_DEVICE_FD %s: %s", bdf, strerror(errno));

memory:;
	/* memory: the RX ring with its buffers, and optionally the large mapped-only region */
	struct mapping maps[1 + MAX_ALIASES];
	int nmaps = 0;
	size_t rx_size = NDESC * DESC_SIZE + NDESC * BUF_SIZE;
	double t = now();
	if (nvme_mode)
		nmaps = nvme_layout(maps);
	else if (vm_mode) {
		/* the VM's RAM at IOVA = guest-physical address, all of it, as a VMM maps it */
		/* --vm-ram-mib: more guest RAM than the ring needs, in 4 KiB pages (no THP), so
		 * that the VM's domain has a PTE per page as a VM's RAM gives it with sp_off */
		rx_size = (size_t)vm_ram_mib << 20 > VM_RAM_SIZE ? (size_t)vm_ram_mib << 20 : VM_RAM_SIZE;
		ring_iova = VM_RING_GPA;
		bufs_iova = VM_BUFS_GPA;
		maps[nmaps++] = (struct mapping){.use = "guest RAM (the VM's RX ring and buffers)", .iova = 0,
						 .size = rx_size, .vaddr = populate(rx_size, vm_ram_mib > 0, "guest RAM")};
	} else
		maps[nmaps++] = (struct mapping){.use = "rx ring and buffers", .iova = RX_IOVA, .size = rx_size,
						 .vaddr = populate(rx_size, 0, "the RX region")};
	maps[0].populate_s = now() - t;
	if (big_mib) {
		size_t big = (size_t)big_mib << 20;
		t = now();
		maps[nmaps++] = (struct mapping){.use = "mapped only, never used by the device", .iova = BIG_IOVA,
						 .size = big, .vaddr = populate(big, 1, "the large region")};
		maps[1].populate_s = now() - t;
		for (unsigned long k = 1; k < big_aliases; k++) {
			maps[nmaps] = maps[1];
			maps[nmaps].use = "mapped only, never used by the device (the same memory again)";
			maps[nmaps].populate_s = 0;        /* populated once, above */
			maps[nmaps++].iova = BIG_IOVA + k * big;
		}
	}
	char ranges[1024];
	iova_ranges(container, ranges, sizeof ranges, maps, nmaps);
	for (int k = 0; k < nmaps; k++)
		map_dma(container, &maps[k]);
	for (int k = 0; k < nmaps; k++) {
		if (k > 1 && maps[k].vaddr == maps[1].vaddr) {
			maps[k].pfn = maps[1].pfn;      /* an alias: the same pages */
			continue;
		}
		read_pagemap(&maps[k]);
	}

	struct rx_desc *ring = maps[0].vaddr;
	struct vfio_region_info cfg = {.argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
	if (ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &cfg))
		die("config region info: %s", strerror(errno));
	if (vm_mode)
		goto bar0;          /* the VM's driver builds its ring and enables the function */
	for (uint32_t i = 0; i < NDESC && !nvme_mode; i++)
		ring[i] = (struct rx_desc){.addr = bufs_iova + (uint64_t)i * BUF_SIZE};

	/* config space: memory decoding and bus mastering (vfio-pci passes both bits through) */
	uint16_t cmd;
	if (pread(device_fd, &cmd, 2, cfg.offset + 4) != 2)
		die("config read: %s", strerror(errno));
	cmd |= 0x6;                     /* PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER */
	if (pwrite(device_fd, &cmd, 2, cfg.offset + 4) != 2)
		die("config write: %s", strerror(errno));
	if (pread(device_fd, &cmd, 2, cfg.offset + 4) != 2 || (cmd & 0x6) != 0x6)
		die("Command register reads 0x%04x after enabling memory and bus master", cmd);

bar0:;
	struct vfio_region_info bi = {.argsz = sizeof bi, .index = VFIO_PCI_BAR0_REGION_INDEX};
	if (ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &bi))
		die("BAR0 region info: %s", strerror(errno));
	bar_off = bi.offset;
	if (bi.flags & VFIO_REGION_INFO_FLAG_MMAP) {
		void *p = mmap(NULL, bi.size, PROT_READ | PROT_WRITE, MAP_SHARED, device_fd, bi.offset);
		if (p != MAP_FAILED)
			bar = p;
	}
	uint64_t bar0_size, bar0_phys = sysfs_bar0(bdf, &bar0_size);
	if (vm_mode)
		run_vm(&vm, maps, nmaps, cfg.offset, truth, bdf, group_id, bar0_phys, bar0_size, ranges, truth_after, t0);
	if (nvme_mode)
		run_nvme(maps, nmaps, truth, bdf, group_id, bar0_phys, bar0_size, ranges, truth_after, t0);

	/* RX off, interrupts masked, link up */
	wr(E1000_RCTL, 0);
	wr(E1000_IMC, 0xffffffff);
	(void)rd(E1000_ICR);
	uint32_t ctrl = rd(E1000_CTRL);
	wr_checked("CTRL", E1000_CTRL, (ctrl | CTRL_SLU) & ~(CTRL_RST | CTRL_PHY_RST), CTRL_SLU);
	for (int i = 0; !(rd(E1000_STATUS) & STATUS_LU); i++) {
		if (i > 300)
			die("no link: STATUS 0x%08x", rd(E1000_STATUS));
		usleep(10000);
	}
	/* legacy descriptors, no RSS; the ring */
	wr_checked("RFCTL", E1000_RFCTL, 0, 0xffffffff);
	wr_checked("MRQC", E1000_MRQC, 0, 0xffffffff);
	wr_checked("RDBAL0", E1000_RDBAL0, (uint32_t)ring_iova, 0xffffffff);
	wr_checked("RDBAH0", E1000_RDBAH0, (uint32_t)(ring_iova >> 32), 0xffffffff);
	wr_checked("RDLEN0", E1000_RDLEN0, NDESC * DESC_SIZE, 0xffffffff);
	wr_checked("RDH0", E1000_RDH0, 0, 0xffff);
	wr_checked("RDT0", E1000_RDT0, 0, 0xffff);
	__sync_synchronize();
	/* receive everything, 2 KiB buffers (BSIZE 0, BSEX 0), CRC stripped */
	uint32_t rctl = RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_SECRC;
	wr_checked("RCTL", E1000_RCTL, rctl, 0xffffffff);
	wr_checked("RDT0", E1000_RDT0, NDESC - 1, 0xffff);

	/* wait for the stream to land (RDH moves), then keep the ring from filling */
	uint32_t next = 0, rdh = 0, rdt = NDESC - 1;
	uint64_t received = 0;
	int written = 0;
	double start = now(), first_packet = 0;
	for (;;) {
		usleep(10000);
		rdh = rd(E1000_RDH0) & 0xffff;
		if (rdh >= NDESC)
			die("RDH0 reads %u, outside the ring of %u", rdh, NDESC);
		while (next != rdh) {
			volatile struct rx_desc *d = &ring[next];
			if (!(d->status & RXD_STAT_DD))
				die("descriptor %u behind RDH %u has no DD (status 0x%02x)", next, rdh, d->status);
			d->status = 0;
			d->length = 0;
			received++;
			next = (next + 1) % NDESC;
		}
		__sync_synchronize();
		rdt = (rdh + NDESC - 1) % NDESC;
		wr(E1000_RDT0, rdt);
		if (received && !first_packet)
			first_packet = now();
		if (!written && received && (received >= truth_after || now() - first_packet > 10)) {
			write_truth(truth, bdf, group_id, maps, nmaps, ring_json(rdh, rdt, received), bar0_phys,
				    bar0_size, ranges, now() - t0, NULL);
			written = 1;
			marker("vfio-rx dma running (pid %d, rdh %u, rdt %u, received %" PRIu64 ", setup %.1fs)", getpid(),
			       rdh, rdt, received, now() - t0);
		}
		if (!written && now() - start > 60)
			die("no packet reached the ring in 60 s: RDH %u, STATUS 0x%08x, RCTL 0x%08x", rdh,
			    rd(E1000_STATUS), rd(E1000_RCTL));
	}
}
