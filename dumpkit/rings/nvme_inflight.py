"""nvme: the commands the driver had submitted and not completed when the kernel died,
with where their data goes (the PRP entries: device addresses of the data pages).

A command is in flight while its block request is (``request.state`` MQ_RQ_IN_FLIGHT).
Each hardware queue's requests are preallocated (``blk_mq_tags.static_rqs``), the nvme
driver's per-request data (``struct nvme_iod``, holding the NVMe command it submitted)
follows each ``struct request`` (``blk_mq_rq_to_pdu``). A read still in flight is DMA the
controller will do later: after the crash, into the pages its PRP entries name.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import drgn

from dumpkit.kernel import driver_data

__all__ = ["NvmeCommand", "in_flight_commands", "data_pages"]

MQ_RQ_IN_FLIGHT = 1
MAX_TAGS = 1 << 14              # per hardware queue (NVMe allows 64 Ki entries; Linux uses <= 4095)
MAX_QUEUES = 1 << 10
OPCODES = {0x00: "flush", 0x01: "write", 0x02: "read", 0x08: "write zeroes", 0x09: "dataset management"}
PAGE = 4096
CQE_SIZE = 16
PRP_LIST_MAX = 512              # entries in one PRP list page


@dataclass
class NvmeCommand:
    """One command in flight: its queue, command id, what it does, the data's size and PRP
    entries (device addresses: IOVAs when an IOMMU translates, else physical)."""

    qid: int
    command_id: int
    opcode: str
    slba: int
    data_bytes: int
    prp1: int
    prp2: int
    request: int                # the struct request's address
    # the controller posted its completion, which the kernel never processed: its data
    # transfer is over (a command without one may still move data)
    device_completed: bool = False
    sources: list[str] = field(default_factory=list)

    @property
    def writes_memory(self) -> bool:
        """The controller writes host memory for it (a read from the disk)."""
        return self.opcode == "read"


def in_flight_commands(prog: drgn.Program, pdev: drgn.Object) -> list[NvmeCommand]:
    """The I/O commands in flight on an nvme function (bounded walks of its tag sets).

    :raises drgn.FaultError: a structure on the way is not in the dump
    """
    dev = driver_data(pdev.dev, "struct nvme_dev *")
    if not dev:
        return []
    tagset = dev.tagset
    rq_type = prog.type("struct request")
    iod_ptr = prog.pointer_type(prog.type("struct nvme_iod"))
    posted = _posted_completions(prog, dev)
    out = []
    for hctx in range(min(tagset.nr_hw_queues.value_(), MAX_QUEUES)):
        tags = tagset.tags[hctx]
        if not tags:
            continue
        for i in range(min(tags.nr_tags.value_(), MAX_TAGS)):
            rq = tags.static_rqs[i]
            if not rq or rq.state.value_() != MQ_RQ_IN_FLIGHT:
                continue
            iod = drgn.Object(prog, iod_ptr, rq.value_() + drgn.sizeof(rq_type))
            cmd = iod.cmd.rw
            op = cmd.opcode.value_()
            out.append(NvmeCommand(
                qid=hctx + 1, command_id=cmd.command_id.value_(), opcode=OPCODES.get(op, f"opcode {op:#x}"),
                slba=cmd.slba.value_(), data_bytes=rq.__data_len.value_(), prp1=cmd.dptr.prp1.value_(),
                prp2=cmd.dptr.prp2.value_(), request=rq.value_(),
                device_completed=(hctx + 1, cmd.command_id.value_()) in posted,
                sources=[f"struct request {rq.value_():#x} (tag {i} of hardware queue {hctx}) and the "
                         f"struct nvme_iod after it"]))
    return out


def _posted_completions(prog: drgn.Program, dev: drgn.Object) -> set[tuple[int, int]]:
    """(queue id, command id) of each completion entry the controller posted past the
    driver's head (its phase tag is the current one), as ``decode_nvme`` counts them."""
    out = set()
    for qid in range(1, min(dev.online_queues.value_(), MAX_QUEUES)):
        q = dev.queues[qid]
        if not q.cqes:
            continue
        depth, i, phase = q.q_depth.value_(), q.cq_head.value_(), q.cq_phase.value_()
        raw = prog.read(q.cqes.value_(), depth * CQE_SIZE)
        for _ in range(depth):
            cid, status = struct.unpack_from("<HH", raw, i * CQE_SIZE + 12)
            if status & 1 != phase:
                break
            out.add((qid, cid))
            i += 1
            if i == depth:
                i, phase = 0, phase ^ 1
    return out


def data_pages(prog: drgn.Program, cmd: NvmeCommand, to_phys: Callable[[int], int | None]) -> tuple[list[int], str | None]:
    """The device addresses of a command's data pages, in order, from its PRP entries
    (NVMe base spec, "Physical Region Page Entry and List"): PRP1 is the first page (with
    an offset), PRP2 the second page or, when more than two pages are needed, the device
    address of a PRP list whose last entry chains to the next list page. ``to_phys`` turns
    a device address into a physical one (the IOMMU's translation, or the identity), to
    read the lists. Returns the pages and, if a list could not be read, why."""
    if cmd.data_bytes <= 0 or not cmd.prp1:
        return [], None
    first = PAGE - (cmd.prp1 & (PAGE - 1))
    need = 1 + max(0, -(-(cmd.data_bytes - first) // PAGE))
    pages = [cmd.prp1 & ~(PAGE - 1)]
    if need == 1:
        return pages, None
    if need == 2:
        return pages + [cmd.prp2 & ~(PAGE - 1)], None
    addr, left = cmd.prp2, need - 1
    for _ in range(need):           # bounded: one list page per PRP_LIST_MAX - 1 entries
        phys = to_phys(addr & ~7)
        if phys is None:
            return pages, f"PRP list at device address {addr:#x} is not mapped"
        room = (PAGE - (phys & (PAGE - 1))) // 8
        try:
            raw = prog.read(phys, room * 8, True)
        except drgn.FaultError:
            return pages, f"PRP list page {phys & ~(PAGE - 1):#x} is not in the dump"
        entries = struct.unpack(f"<{room}Q", raw)
        if left <= room:
            return pages + [e & ~(PAGE - 1) for e in entries[:left]], None
        pages += [e & ~(PAGE - 1) for e in entries[:room - 1]]
        left -= room - 1
        addr = entries[room - 1]
    return pages, "PRP list chain longer than the command's data"
