/*
 * vfio-nvme.h: vfio-rx --nvme, the second device of the VFIO scenarios. Instead of the
 * e1000e, vfio-rx drives the NVMe controller (QEMU's nvme) as SPDK-style userspace
 * drivers do: the admin queue pair and one I/O queue pair in its own memory, NVME_QSIZE - 1
 * reads of NVME_READ_SIZE bytes always outstanding, each completion answered by the next
 * read from the same buffer. The generator throttles the drive, so reads stay queued in
 * the controller through the crash and their completions (16-byte entries written into
 * this process's completion queue, at IOVAs of its mappings) go on into the capture
 * kernel's time.
 *
 * Two mappings, as a driver keeps queues apart from data: NVME_QUEUES_IOVA holds the
 * admin queues, an identify buffer and the I/O queue pair; NVME_DATA_IOVA the read
 * buffers, one per command id.
 *
 * Follows the NVMe base specification 1.4 as QEMU's emulation implements it
 * (hw/nvme/ctrl.c): the controller is disabled (CC.EN 0, wait CSTS.RDY 0), AQA/ASQ/ACQ
 * set, enabled with 64-byte SQ and 16-byte CQ entries (CC.IOSQES 6, IOCQES 4), the
 * I/O completion queue created before its submission queue, both physically contiguous
 * (PC), interrupts off (the CQ's IEN clear: this driver polls the phase bit). Doorbells
 * at 0x1000 + (2 * qid + is_cq) * (4 << CAP.DSTRD).
 */

#define NVME_CAP 0x00
#define NVME_CC 0x14
#define NVME_CSTS 0x1c
#define NVME_AQA 0x24
#define NVME_ASQ 0x28
#define NVME_ACQ 0x30
#define NVME_DOORBELLS 0x1000
#define NVME_CC_EN 1u
#define NVME_CC_ENTRY_SIZES ((6u << 16) | (4u << 20))
#define NVME_CSTS_RDY 1u
#define NVME_CSTS_CFS 2u

#define NVME_QUEUES_IOVA UINT64_C(0x10000000)
#define NVME_DATA_IOVA UINT64_C(0x20000000)
#define NVME_ADMIN_QSIZE 16u
#define NVME_QSIZE 1024u
#define NVME_READ_SIZE 4096u
/* offsets in the queues mapping */
#define NVME_ASQ_OFF 0x0000u
#define NVME_ACQ_OFF 0x1000u
#define NVME_IDENTIFY_OFF 0x2000u
#define NVME_SQ_OFF 0x10000u
#define NVME_CQ_OFF 0x20000u
#define NVME_QUEUES_SIZE 0x40000u

struct nvme_sqe {
	uint8_t opc, flags;
	uint16_t cid;
	uint32_t nsid;
	uint64_t rsvd, mptr, prp1, prp2;
	uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};

struct nvme_cqe {
	uint32_t dw0, dw1;
	uint16_t sqhd, sqid, cid, status;       /* status bit 0: the phase tag */
};

struct nvme_queue {
	int qid;
	uint32_t size, tail, head, phase;
	volatile struct nvme_sqe *sq;
	volatile struct nvme_cqe *cq;
	uint64_t sq_iova, cq_iova;
};

static struct {
	uint32_t dstrd, lba_size, mqes;
	uint64_t nsze;
	uint64_t submitted, completed, errors;
	uint64_t next_lba;
} nv;

_Static_assert(sizeof(struct nvme_sqe) == 64, "NVMe submission entry");
_Static_assert(sizeof(struct nvme_cqe) == 16, "NVMe completion entry");

static void nvme_wr64(uint32_t reg, uint64_t v)
{
	wr(reg, (uint32_t)v);
	wr(reg + 4, (uint32_t)(v >> 32));
}

static void nvme_doorbell(const struct nvme_queue *q, int cq, uint32_t v)
{
	wr(NVME_DOORBELLS + (2 * q->qid + cq) * (4u << nv.dstrd), v);
}

static void nvme_wait_ready(uint32_t want, double timeout_s)
{
	double t = now();
	while ((rd(NVME_CSTS) & NVME_CSTS_RDY) != want) {
		if (rd(NVME_CSTS) & NVME_CSTS_CFS)
			die("NVMe controller fatal status (CSTS 0x%08x)", rd(NVME_CSTS));
		if (now() - t > timeout_s)
			die("NVMe CSTS.RDY not %u after %.1f s (CSTS 0x%08x)", want, timeout_s, rd(NVME_CSTS));
		usleep(1000);
	}
}

static void nvme_submit(struct nvme_queue *q, const struct nvme_sqe *cmd)
{
	q->sq[q->tail] = *cmd;
	q->tail = (q->tail + 1) % q->size;
}

/* the next completion of q, or NULL */
static volatile struct nvme_cqe *nvme_reap(struct nvme_queue *q)
{
	volatile struct nvme_cqe *e = &q->cq[q->head];
	if ((e->status & 1) != q->phase)
		return NULL;
	__sync_synchronize();
	if (++q->head == q->size) {
		q->head = 0;
		q->phase ^= 1;
	}
	return e;
}

/* one admin command, waited for */
static uint32_t nvme_admin(struct nvme_queue *aq, struct nvme_sqe cmd, const char *what)
{
	static uint16_t cid;
	cmd.cid = ++cid;
	nvme_submit(aq, &cmd);
	__sync_synchronize();
	nvme_doorbell(aq, 0, aq->tail);
	double t = now();
	for (;;) {
		volatile struct nvme_cqe *e = nvme_reap(aq);
		if (e) {
			uint16_t status = e->status >> 1, got = e->cid;
			uint32_t dw0 = e->dw0;
			nvme_doorbell(aq, 1, aq->head);
			if (got != cmd.cid)
				die("NVMe %s: completion for cid %u, not %u", what, got, cmd.cid);
			if (status)
				die("NVMe %s failed: status 0x%x", what, status);
			return dw0;
		}
		if (now() - t > 10)
			die("NVMe %s: no completion in 10 s (CSTS 0x%08x)", what, rd(NVME_CSTS));
		usleep(1000);
	}
}

static void nvme_read_into(struct nvme_queue *q, uint16_t cid)
{
	uint32_t nlb = NVME_READ_SIZE / nv.lba_size;
	if (nv.next_lba + nlb > nv.nsze)
		nv.next_lba = 0;
	struct nvme_sqe cmd = {.opc = 0x02, .cid = cid, .nsid = 1,
			       .prp1 = NVME_DATA_IOVA + (uint64_t)cid * NVME_READ_SIZE,
			       .cdw10 = (uint32_t)nv.next_lba, .cdw11 = (uint32_t)(nv.next_lba >> 32),
			       .cdw12 = nlb - 1};
	nv.next_lba += nlb;
	nvme_submit(q, &cmd);
	nv.submitted++;
}

/* the two mappings, populated */
static int nvme_layout(struct mapping *maps)
{
	maps[0] = (struct mapping){.use = "NVMe admin and I/O queues", .iova = NVME_QUEUES_IOVA,
				   .size = NVME_QUEUES_SIZE, .vaddr = populate(NVME_QUEUES_SIZE, 0, "the NVMe queues")};
	size_t data = (size_t)NVME_QSIZE * NVME_READ_SIZE;
	maps[1] = (struct mapping){.use = "NVMe read buffers", .iova = NVME_DATA_IOVA, .size = data,
				   .vaddr = populate(data, 0, "the NVMe read buffers")};
	return 2;
}

static struct nvme_queue nvme_queue_at(int qid, uint32_t size, char *base, uint32_t sq_off, uint32_t cq_off)
{
	return (struct nvme_queue){.qid = qid, .size = size, .phase = 1,
				   .sq = (void *)(base + sq_off), .cq = (void *)(base + cq_off),
				   .sq_iova = NVME_QUEUES_IOVA + sq_off, .cq_iova = NVME_QUEUES_IOVA + cq_off};
}

/* the controller up with an I/O queue pair, then reads forever; the ground truth once
 * truth_after reads have completed (or 10 s after the first) */
static void run_nvme(struct mapping *maps, int nmaps, const char *truth, const char *bdf, int group_id,
		     uint64_t bar0_phys, uint64_t bar0_size, const char *ranges, unsigned long truth_after, double t0)
{
	char *base = maps[0].vaddr;
	uint64_t cap = rd(NVME_CAP) | (uint64_t)rd(NVME_CAP + 4) << 32;
	nv.mqes = (cap & 0xffff) + 1;
	nv.dstrd = (cap >> 32) & 0xf;
	double timeout = ((cap >> 24) & 0xff) * 0.5 + 1;
	if (nv.mqes < NVME_QSIZE)
		die("NVMe CAP.MQES allows %u entries, fewer than %u", nv.mqes, NVME_QSIZE);
	if (!(cap >> 37 & 1))
		die("NVMe CAP 0x%" PRIx64 " has no NVM command set", cap);

	wr(NVME_CC, 0);
	nvme_wait_ready(0, timeout);
	struct nvme_queue aq = nvme_queue_at(0, NVME_ADMIN_QSIZE, base, NVME_ASQ_OFF, NVME_ACQ_OFF);
	wr(NVME_AQA, (NVME_ADMIN_QSIZE - 1) << 16 | (NVME_ADMIN_QSIZE - 1));
	nvme_wr64(NVME_ASQ, aq.sq_iova);
	nvme_wr64(NVME_ACQ, aq.cq_iova);
	wr(NVME_CC, NVME_CC_ENTRY_SIZES | NVME_CC_EN);
	nvme_wait_ready(1, timeout);

	/* namespace 1: its size and LBA size (Identify, CNS 0) */
	uint8_t *id = (uint8_t *)base + NVME_IDENTIFY_OFF;
	nvme_admin(&aq, (struct nvme_sqe){.opc = 0x06, .nsid = 1, .prp1 = NVME_QUEUES_IOVA + NVME_IDENTIFY_OFF},
		   "Identify namespace 1");
	memcpy(&nv.nsze, id, 8);
	uint8_t lbads = id[128 + 4 * (id[26] & 0xf) + 2];
	nv.lba_size = 1u << lbads;
	if (!nv.nsze || lbads < 9 || nv.lba_size > NVME_READ_SIZE)
		die("NVMe namespace 1: %" PRIu64 " blocks of %u bytes", nv.nsze, nv.lba_size);

	struct nvme_queue q = nvme_queue_at(1, NVME_QSIZE, base, NVME_SQ_OFF, NVME_CQ_OFF);
	nvme_admin(&aq, (struct nvme_sqe){.opc = 0x05, .prp1 = q.cq_iova, .cdw10 = (NVME_QSIZE - 1) << 16 | 1,
					  .cdw11 = 1}, "Create I/O Completion Queue 1");
	nvme_admin(&aq, (struct nvme_sqe){.opc = 0x01, .prp1 = q.sq_iova, .cdw10 = (NVME_QSIZE - 1) << 16 | 1,
					  .cdw11 = 1u << 16 | 1}, "Create I/O Submission Queue 1");

	for (uint16_t cid = 0; cid < NVME_QSIZE - 1; cid++)
		nvme_read_into(&q, cid);
	__sync_synchronize();
	nvme_doorbell(&q, 0, q.tail);

	int written = 0;
	double start = now(), first = 0;
	for (;;) {
		usleep(10000);
		int reaped = 0;
		for (volatile struct nvme_cqe *e; (e = nvme_reap(&q)); reaped++) {
			if (e->status >> 1)
				die("NVMe read cid %u failed: status 0x%x", e->cid, e->status >> 1);
			if (e->cid >= NVME_QSIZE - 1)
				die("NVMe completion for cid %u, never submitted", e->cid);
			nv.completed++;
			nvme_read_into(&q, e->cid);
		}
		if (reaped) {
			__sync_synchronize();
			nvme_doorbell(&q, 1, q.head);
			nvme_doorbell(&q, 0, q.tail);
		}
		if (rd(NVME_CSTS) & NVME_CSTS_CFS)
			die("NVMe controller fatal status after %" PRIu64 " reads", nv.completed);
		if (nv.completed && !first)
			first = now();
		if (!written && nv.completed && (nv.completed >= truth_after || now() - first > 10)) {
			char nvme_json[768];
			snprintf(nvme_json, sizeof nvme_json,
				 "\"ring\": null,\n \"nvme\": {\"asq_iova\": %" PRIu64 ", \"acq_iova\": %" PRIu64
				 ", \"admin_entries\": %u, \"sq_iova\": %" PRIu64 ", \"cq_iova\": %" PRIu64
				 ", \"sqid\": 1, \"cqid\": 1, \"entries\": %u, \"sq_entry_size\": 64, \"cq_entry_size\": 16"
				 ", \"data_iova\": %" PRIu64 ", \"read_size\": %u, \"lba_size\": %u, \"nsze\": %" PRIu64
				 ", \"submitted\": %" PRIu64 ", \"completed\": %" PRIu64 ", \"outstanding\": %" PRIu64
				 ", \"sq_tail\": %u, \"cq_head\": %u, \"interrupts\": false}",
				 aq.sq_iova, aq.cq_iova, NVME_ADMIN_QSIZE, q.sq_iova, q.cq_iova, NVME_QSIZE,
				 NVME_DATA_IOVA, NVME_READ_SIZE, nv.lba_size, nv.nsze, nv.submitted, nv.completed,
				 nv.submitted - nv.completed, q.tail, q.head);
			write_truth(truth, bdf, group_id, maps, nmaps, nvme_json, bar0_phys, bar0_size, ranges,
				    now() - t0, NULL);
			written = 1;
			marker("vfio-rx dma running (pid %d, NVMe, %" PRIu64 " reads completed, %" PRIu64
			       " outstanding, setup %.1fs)", getpid(), nv.completed, nv.submitted - nv.completed,
			       now() - t0);
		}
		if (!written && now() - start > 60)
			die("no NVMe read completed in 60 s (CSTS 0x%08x)", rd(NVME_CSTS));
	}
}
