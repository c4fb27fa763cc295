"""nvme: completion-queue entries whose phase tag says the controller posted them after
the driver's head."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import QueueEvidence, RingDecoder, reads

__all__ = ["decode_nvme", "DECODER"]

CQE_SIZE = 16


def decode_nvme(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    dev = driver_data(pdev.dev, "struct nvme_dev *")
    if not dev:
        return []
    reads("struct nvme_dev", dev)
    if not dev.queues:
        return []
    out = []
    for qid in range(dev.online_queues.value_()):
        reads(f"struct nvme_queue {qid}", dev.queues[qid].address_of_())
        q = dev.queues[qid]
        if not q.cqes:
            continue
        depth, head, phase = q.q_depth.value_(), q.cq_head.value_(), q.cq_phase.value_()
        reads(f"nvme completion queue {qid}", q.cqes.value_(), depth * CQE_SIZE)
        raw = prog.read(q.cqes.value_(), depth * CQE_SIZE)
        n, i, p = 0, head, phase
        while n < depth:
            status, = struct.unpack_from("<H", raw, i * CQE_SIZE + 14)
            if status & 1 != p:
                break
            n += 1
            i += 1
            if i == depth:
                i, p = 0, p ^ 1
        out.append(QueueEvidence(f"cq{qid}", depth, n, head, i))
    return out


# struct nvme_dev and nvme_queue are defined in drivers/nvme/host/pci.c: module "nvme"
DECODER = RingDecoder("nvme", "1", ("nvme",), ("nvme",), decode_nvme)
