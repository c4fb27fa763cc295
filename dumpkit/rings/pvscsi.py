"""vmw_pvscsi: the rings state page the driver shares with the device holds producer
and consumer indexes of the request, completion and message rings. Completions the
device produced (``cmpProdIdx``) beyond what the driver consumed (``cmpConsIdx``) were
never processed; each names its request by context, which gives the command's buffers."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads
from dumpkit.rings.generic import scsi_data_dma

__all__ = ["decode_pvscsi", "pvscsi_adapter", "pvscsi_buffers", "DECODER"]

PAGE_SIZE = 4096
CMP_DESC_SIZE = 32         # struct PVSCSIRingCmpDesc: context (8), dataLen (8), ...
REQ_DESC_SIZE = 128
MSG_DESC_SIZE = 128
MAX_RING_LOG2 = 16         # 32 pages of 128 completion entries at most (PVSCSI_SETUP_RINGS_MAX_NUM_PAGES)


def pvscsi_adapter(prog: drgn.Program, pdev: drgn.Object) -> drgn.Object | None:
    """``struct pvscsi_adapter *`` (the Scsi_Host's private data), or None before probe."""
    host = driver_data(pdev.dev, "struct Scsi_Host *")
    if not host:
        return None
    reads("struct Scsi_Host", host)
    # shost_priv(): the driver's data follows struct Scsi_Host (hostdata[])
    return drgn.Object(prog, "struct pvscsi_adapter *", value=host.hostdata.address_)


def _state(adapter: drgn.Object) -> dict[str, int] | None:
    s = adapter.rings_state
    if not s:
        return None
    reads("pvscsi rings state page", s, PAGE_SIZE)
    return {f: getattr(s, f).value_() for f in ("reqProdIdx", "reqConsIdx", "reqNumEntriesLog2", "cmpProdIdx",
                                                 "cmpConsIdx", "cmpNumEntriesLog2", "msgProdIdx", "msgConsIdx",
                                                 "msgNumEntriesLog2")}


def decode_pvscsi(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    adapter = pvscsi_adapter(prog, pdev)
    if adapter is None:
        return []
    reads("struct pvscsi_adapter", adapter)
    if not adapter.cmp_ring:
        return []
    st = _state(adapter)
    if st is None:
        return []
    out = []
    log2 = st["cmpNumEntriesLog2"]
    pages = adapter.cmp_pages.value_()
    size = 1 << log2 if log2 <= MAX_RING_LOG2 else 0
    if not size or size * CMP_DESC_SIZE > pages * PAGE_SIZE:
        raise ValueError(f"pvscsi completion ring of 2^{log2} entries does not fit its {pages} pages")
    prod, cons = st["cmpProdIdx"], st["cmpConsIdx"]
    pending = (prod - cons) & 0xFFFFFFFF
    if pending > size:
        raise ValueError(f"pvscsi completion ring: producer {prod} is {pending} entries past consumer {cons}, "
                         f"more than its {size} entries")
    reads("pvscsi completion ring", adapter.cmp_ring, size * CMP_DESC_SIZE)
    raw = prog.read(adapter.cmp_ring.value_(), size * CMP_DESC_SIZE)
    depth = adapter.req_depth.value_()
    if pending and adapter.cmd_map:
        reads("pvscsi cmd_map (struct pvscsi_ctx[])", adapter.cmd_map, depth * drgn.sizeof(adapter.cmd_map[0]))
    addrs = []
    for k in range(pending):
        context, = struct.unpack_from("<Q", raw, ((cons + k) & (size - 1)) * CMP_DESC_SIZE)
        # pvscsi_get_context: the context is the request's index in cmd_map, plus one
        if 1 <= context <= depth:
            ctx = adapter.cmd_map[context - 1]
            addrs.extend(_ctx_dma(ctx))
    out.append(QueueEvidence("completion ring", size, pending, cons & (size - 1), prod & (size - 1), addrs))
    # requests the driver queued that the device had not taken yet: not completions,
    # but the device takes them when it is next kicked
    rlog2 = st["reqNumEntriesLog2"]
    if rlog2 <= MAX_RING_LOG2:
        rsize = 1 << rlog2
        out.append(QueueEvidence("request ring (queued, not yet taken by the device)", rsize, 0,
                                 st["reqProdIdx"] & (rsize - 1), st["reqConsIdx"] & (rsize - 1)))
    if adapter.use_msg and adapter.msg_ring:
        mlog2 = st["msgNumEntriesLog2"]
        if mlog2 <= MAX_RING_LOG2:
            msize = 1 << mlog2
            mpending = (st["msgProdIdx"] - st["msgConsIdx"]) & 0xFFFFFFFF
            out.append(QueueEvidence("message ring", msize, min(mpending, msize), st["msgConsIdx"] & (msize - 1),
                                     st["msgProdIdx"] & (msize - 1)))
    return out


def _ctx_dma(ctx: drgn.Object) -> list[int]:
    """The buffers of one request: its data (scatterlist as mapped for the device, or the
    single buffer) and its sense buffer."""
    out = []
    cmd = ctx.cmd
    if cmd:
        out.extend(scsi_data_dma(cmd))
    if not out and ctx.dataPA:
        out.append(ctx.dataPA.value_())
    if ctx.sensePA:
        out.append(ctx.sensePA.value_())
    return out


def pvscsi_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """The rings state page and the request, completion and message rings."""
    adapter = pvscsi_adapter(prog, pdev)
    if adapter is None:
        return []
    out = []
    if adapter.rings_state:
        out.append(DmaBuffer("pvscsi rings state page", adapter.ringStatePA.value_(), PAGE_SIZE))
    for label, ptr, pa, pages in (("request ring", adapter.req_ring, adapter.reqRingPA, adapter.req_pages),
                                  ("completion ring", adapter.cmp_ring, adapter.cmpRingPA, adapter.cmp_pages),
                                  ("message ring", adapter.msg_ring, adapter.msgRingPA, adapter.msg_pages)):
        if ptr and pages:
            out.append(DmaBuffer(f"pvscsi {label}", pa.value_(), pages.value_() * PAGE_SIZE))
    return out


# struct pvscsi_adapter is defined in drivers/scsi/vmw_pvscsi.c: module "vmw_pvscsi"; the
# SCSI command and host types come from scsi_mod
DECODER = RingDecoder("vmw_pvscsi", "1", ("vmw_pvscsi",), ("vmw_pvscsi", "scsi_mod"), decode_pvscsi,
                      pvscsi_buffers)
