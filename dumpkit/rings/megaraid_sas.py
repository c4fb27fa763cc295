"""megaraid_sas: replies the controller posted that the driver never consumed.

Fusion controllers (Thunderbolt and later: ``instance->ctrl_context`` is the fusion
context) post 8-byte reply descriptors into one reply queue per MSI-X vector; the
driver consumes from ``fusion->last_reply_idx[queue]`` while a descriptor is not the
unused marker (all ones), and writes the marker back into every slot it consumed
(complete_cmd_fusion). Descriptors from that index on that are not the marker are
unprocessed replies; each names its command by SMID.

Older MFI controllers (SAS1078/2108 "gen2", what QEMU's megasas-gen2 is) post the
command's context into ``reply_queue[producer]`` and advance a producer index in host
memory that the controller writes; the driver consumes up to it and stores its consumer
index beside it (megasas_complete_cmd_dpc). Unprocessed = producer − consumer."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data, has_member
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads
from dumpkit.rings.generic import scsi_data_dma

__all__ = ["decode_megaraid_sas", "megasas_instance", "megaraid_sas_buffers", "DECODER"]

MFI_SERIES = 1
REPLY_DESC_SIZE = 8
UNUSED = 0xFFFFFFFF
MAX_REPLY_QUEUES = 256     # MAX_MSIX_QUEUES_FUSION
MAX_DEPTH = 1 << 16


def megasas_instance(prog: drgn.Program, pdev: drgn.Object) -> drgn.Object | None:
    inst = driver_data(pdev.dev, "struct megasas_instance *")
    return inst if inst else None


def _is_fusion(inst: drgn.Object) -> bool:
    if has_member(inst.prog_, "struct megasas_instance", "adapter_type"):
        return inst.adapter_type.value_() != MFI_SERIES and bool(inst.ctrl_context)
    return bool(inst.ctrl_context)


def _reply_queue_count(inst: drgn.Object) -> int:
    n = max(inst.msix_vectors.value_(), 1)
    if has_member(inst.prog_, "struct megasas_instance", "iopoll_q_count"):
        n += max(inst.iopoll_q_count.value_(), 0)
    return min(n, MAX_REPLY_QUEUES)


def _cmd_dma(cmd: drgn.Object, frame_member: str) -> list[int]:
    out = []
    if cmd.scmd:
        out.extend(scsi_data_dma(cmd.scmd))
    for member in (frame_member, "sense_phys_addr"):
        addr = getattr(cmd, member).value_()
        if addr:
            out.append(addr)
    return out


def _command(cmd_list: drgn.Object, index: int, count: int, named: str) -> drgn.Object | None:
    """Entry ``index`` of a driver's command pointer array of ``count`` entries, recording
    the array and the command read.

    :param named: how the reply named the command ("SMID 3")
    """
    kind = cmd_list.type_.type.type.tag
    reads(f"megaraid_sas cmd_list (struct {kind} *[])", cmd_list, count * drgn.sizeof(cmd_list.type_.type))
    cmd = cmd_list[index]
    if not cmd:
        return None
    reads(f"struct {kind} ({named})", cmd)
    return cmd


def _fusion(prog: drgn.Program, inst: drgn.Object) -> list[QueueEvidence]:
    fusion = drgn.cast("struct fusion_context *", inst.ctrl_context)
    reads("struct fusion_context", fusion)
    depth = fusion.reply_q_depth.value_()
    if not depth or depth > MAX_DEPTH:
        return []
    max_cmds = inst.max_fw_cmds.value_()
    out = []
    for q in range(_reply_queue_count(inst)):
        base = fusion.reply_frames_desc[q]
        if not base:
            continue
        start = fusion.last_reply_idx[q].value_()
        if start >= depth:
            continue
        reads(f"megaraid_sas reply queue {q}", base.value_(), depth * REPLY_DESC_SIZE)
        raw = prog.read(base.value_(), depth * REPLY_DESC_SIZE)
        n, i, addrs = 0, start, []
        while n < depth:
            low, high = struct.unpack_from("<II", raw, i * REPLY_DESC_SIZE)
            if low == UNUSED or high == UNUSED:
                break
            smid = (low >> 16) & 0xFFFF
            if 1 <= smid <= max_cmds and fusion.cmd_list:
                cmd = _command(fusion.cmd_list, smid - 1, max_cmds, f"SMID {smid}")
                if cmd:
                    addrs.extend(_cmd_dma(cmd, "io_request_phys_addr"))
            n += 1
            i = (i + 1) % depth
        out.append(QueueEvidence(f"reply queue {q}", depth, n, start, i, addrs))
    return out


def _mfi(prog: drgn.Program, inst: drgn.Object) -> list[QueueEvidence]:
    if not inst.reply_queue or not inst.producer or not inst.consumer:
        return []
    entries = inst.max_fw_cmds.value_() + 1
    if entries > MAX_DEPTH:
        raise ValueError(f"megaraid_sas MFI reply queue of {entries} entries")
    reads("megaraid_sas MFI producer index", inst.producer, 4)
    reads("megaraid_sas MFI consumer index", inst.consumer, 4)
    prod, cons = inst.producer[0].value_(), inst.consumer[0].value_()
    if prod >= entries or cons >= entries:
        raise ValueError(f"megaraid_sas MFI producer {prod} or consumer {cons} beyond {entries} entries")
    n = (prod - cons) % entries
    reads("megaraid_sas MFI reply queue", inst.reply_queue, entries * 4)
    raw = prog.read(inst.reply_queue.value_(), entries * 4)
    addrs = []
    for k in range(n):
        context, = struct.unpack_from("<I", raw, ((cons + k) % entries) * 4)
        if context < inst.max_fw_cmds.value_() and inst.cmd_list:
            cmd = _command(inst.cmd_list, context, entries - 1, f"context {context}")
            if cmd:
                addrs.extend(_cmd_dma(cmd, "frame_phys_addr"))
    return [QueueEvidence("MFI reply queue", entries, n, cons, prod, addrs)]


def decode_megaraid_sas(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    inst = megasas_instance(prog, pdev)
    if inst is None:
        return []
    reads("struct megasas_instance", inst)
    return _fusion(prog, inst) if _is_fusion(inst) else _mfi(prog, inst)


def megaraid_sas_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """The reply queue(s) and, for MFI, the producer and consumer words."""
    inst = megasas_instance(prog, pdev)
    if inst is None:
        return []
    out = []
    if _is_fusion(inst):
        fusion = drgn.cast("struct fusion_context *", inst.ctrl_context)
        depth = fusion.reply_q_depth.value_()
        first = fusion.reply_frames_desc[0]
        for q in range(_reply_queue_count(inst)):
            virt = fusion.reply_frames_desc[q]
            if not virt:
                continue
            # RDPQ mode allocates each queue apart; otherwise they follow the first one
            phys = fusion.reply_frames_desc_phys[q].value_()
            if not phys and first:
                phys = fusion.reply_frames_desc_phys[0].value_() + (virt.value_() - first.value_())
            out.append(DmaBuffer(f"megaraid_sas reply queue {q}", phys, depth * REPLY_DESC_SIZE))
        if fusion.req_frames_desc:
            out.append(DmaBuffer("megaraid_sas request descriptors", fusion.req_frames_desc_phys.value_(),
                                 fusion.request_alloc_sz.value_()))
    else:
        if inst.reply_queue:
            out.append(DmaBuffer("megaraid_sas MFI reply queue", inst.reply_queue_h.value_(),
                                 (inst.max_fw_cmds.value_() + 1) * 4))
        if inst.producer:
            out.append(DmaBuffer("megaraid_sas MFI producer index", inst.producer_h.value_(), 4))
        if inst.consumer:
            out.append(DmaBuffer("megaraid_sas MFI consumer index", inst.consumer_h.value_(), 4))
    return out


# struct megasas_instance and fusion_context: drivers/scsi/megaraid/, module "megaraid_sas";
# the SCSI command types come from scsi_mod
DECODER = RingDecoder("megaraid_sas", "1", ("megaraid_sas",), ("megaraid_sas", "scsi_mod"), decode_megaraid_sas,
                      megaraid_sas_buffers)
