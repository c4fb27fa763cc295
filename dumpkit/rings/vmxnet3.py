"""vmxnet3: completion descriptors the device wrote into the RX and TX completion rings
whose generation bit says they belong to the driver's current pass, from the driver's
``next2proc`` on (vmxnet3_rq_rx_complete and vmxnet3_tq_tx_complete stop at the first
descriptor whose gen differs from ``comp_ring.gen``)."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads

__all__ = ["decode_vmxnet3", "vmxnet3_adapter", "vmxnet3_buffers", "DECODER"]

COMP_DESC_SIZE = 16        # Vmxnet3_RxCompDesc and Vmxnet3_TxCompDesc
GEN_BIT = 1 << 31          # dword 3, both completion descriptor kinds
IDX_MASK = 0xFFF           # dword 0: rxdIdx / txdIdx
RQID_SHIFT, RQID_MASK = 16, 0x3FF
MAX_QUEUES = 32            # VMXNET3_DEVICE_MAX_{TX,RX}_QUEUES


def vmxnet3_adapter(prog: drgn.Program, pdev: drgn.Object) -> tuple[drgn.Object, drgn.Object] | None:
    """(net_device *, vmxnet3_adapter *), or None before probe."""
    from drgn.helpers.linux.net import netdev_priv

    netdev = driver_data(pdev.dev, "struct net_device *")
    if not netdev:
        return None
    reads("struct net_device", netdev)
    return netdev, drgn.cast("struct vmxnet3_adapter *", netdev_priv(netdev))


def _queues(adapter: drgn.Object, kind: str) -> list[tuple[int, drgn.Object]]:
    n = getattr(adapter, f"num_{kind}_queues").value_()
    arr = getattr(adapter, f"{kind}_queue")
    out = []
    for q in range(max(0, min(n, MAX_QUEUES, len(arr)))):
        # the queues are inside the adapter: recorded apart, a fault names the queue
        reads(f"struct vmxnet3_{kind}_queue {kind}q{q}", arr[q].address_of_())
        out.append((q, arr[q]))
    return out


def _pending(prog: drgn.Program, ring: drgn.Object, label: str) -> tuple[int, int, int, bytes] | None:
    """(size, next2proc, index after the last device-owned descriptor, raw ring)."""
    size, start, gen = ring.size.value_(), ring.next2proc.value_(), ring.gen.value_() & 1
    if not ring.base or not size or start >= size:
        return None
    reads(label, ring.base.value_(), size * COMP_DESC_SIZE)
    raw = prog.read(ring.base.value_(), size * COMP_DESC_SIZE)
    return size, start, gen, raw


def _walk(size: int, start: int, gen: int, raw: bytes):
    """Yield (index, dword0) of descriptors written for the driver's current pass; the
    generation flips where the ring wraps (vmxnet3_comp_ring_adv_next2proc)."""
    i, g = start, gen
    for _ in range(size):
        dw0, dw3 = struct.unpack_from("<I8xI", raw, i * COMP_DESC_SIZE)
        if bool(dw3 & GEN_BIT) != bool(g):
            return
        yield i, dw0
        i += 1
        if i == size:
            i, g = 0, g ^ 1


def _rx_queue(prog: drgn.Program, adapter: drgn.Object, q: int, name: str, rq: drgn.Object) -> QueueEvidence | None:
    found = _pending(prog, rq.comp_ring, f"vmxnet3 rxq{q} completion ring")
    if found is None:
        return None
    size, start, gen, raw = found
    nq = adapter.num_rx_queues.value_()
    ring_sizes = [rq.rx_ring[r].size.value_() for r in (0, 1)]
    for r in (0, 1):
        if rq.buf_info[r]:
            reads(f"vmxnet3 rxq{q} ring{r} buf_info array", rq.buf_info[r],
                  ring_sizes[r] * drgn.sizeof(rq.buf_info[r][0]))
    addrs, n, end = [], 0, start
    for i, dw0 in _walk(size, start, gen, raw):
        n += 1
        end = (i + 1) % size
        idx, rqid = dw0 & IDX_MASK, (dw0 >> RQID_SHIFT) & RQID_MASK
        # VMXNET3_GET_RING_IDX / VMXNET3_RX_DATA_RING: which ring the buffer came from
        if rqid < nq or rqid < 2 * nq:
            r = 0 if rqid < nq else 1
            if idx < ring_sizes[r] and rq.buf_info[r]:
                addrs.append(rq.buf_info[r][idx].dma_addr.value_())
        elif rqid < 3 * nq and rq.data_ring.base:
            addrs.append(rq.data_ring.basePA.value_() + idx * rq.data_ring.desc_size.value_())
    return QueueEvidence(name, size, n, start, end, addrs)


def _tx_queue(prog: drgn.Program, q: int, name: str, tq: drgn.Object) -> QueueEvidence | None:
    found = _pending(prog, tq.comp_ring, f"vmxnet3 txq{q} completion ring")
    if found is None:
        return None
    size, start, gen, raw = found
    tx_size = tq.tx_ring.size.value_()
    comp = tq.tx_ring.next2comp.value_()
    if tq.buf_info:
        reads(f"vmxnet3 txq{q} buf_info array", tq.buf_info, tx_size * drgn.sizeof(tq.buf_info[0]))
    addrs, n, end = [], 0, start
    for i, dw0 in _walk(size, start, gen, raw):
        n += 1
        end = (i + 1) % size
        eop = dw0 & IDX_MASK
        if not tq.buf_info or not tx_size or eop >= tx_size or comp >= tx_size:
            continue
        # the packet's buffers run from tx_ring.next2comp to its EOP descriptor
        for _ in range(tx_size):
            dma = tq.buf_info[comp].dma_addr.value_()
            if dma:
                addrs.append(dma)
            done = comp == eop
            comp = (comp + 1) % tx_size
            if done:
                break
    return QueueEvidence(name, size, n, start, end, addrs)


def decode_vmxnet3(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    found = vmxnet3_adapter(prog, pdev)
    if found is None:
        return []
    netdev, adapter = found
    dev = netdev.name.string_().decode()
    reads("struct vmxnet3_adapter", adapter)
    out = []
    for q, rq in _queues(adapter, "rx"):
        ev = _rx_queue(prog, adapter, q, f"{dev} rxq{q} completion", rq)
        if ev:
            out.append(ev)
    for q, tq in _queues(adapter, "tx"):
        ev = _tx_queue(prog, q, f"{dev} txq{q} completion", tq)
        if ev:
            out.append(ev)
    return out


def vmxnet3_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """Shared area, queue descriptors, and every queue's command and completion rings."""
    found = vmxnet3_adapter(prog, pdev)
    if found is None:
        return []
    adapter = found[1]
    out = []
    if adapter.shared:
        out.append(DmaBuffer("vmxnet3 driver shared area", adapter.shared_pa.value_(),
                             prog.type("struct Vmxnet3_DriverShared").size))
    if adapter.tqd_start:
        n = adapter.num_tx_queues.value_() * prog.type("struct Vmxnet3_TxQueueDesc").size + \
            adapter.num_rx_queues.value_() * prog.type("struct Vmxnet3_RxQueueDesc").size
        out.append(DmaBuffer("vmxnet3 queue descriptors", adapter.queue_desc_pa.value_(), n))
    for q, rq in _queues(adapter, "rx"):
        for r in (0, 1):
            ring = rq.rx_ring[r]
            if ring.base and ring.size:
                out.append(DmaBuffer(f"vmxnet3 rxq{q} ring{r}", ring.basePA.value_(),
                                     ring.size.value_() * COMP_DESC_SIZE))
        if rq.comp_ring.base and rq.comp_ring.size:
            out.append(DmaBuffer(f"vmxnet3 rxq{q} completion ring", rq.comp_ring.basePA.value_(),
                                 rq.comp_ring.size.value_() * COMP_DESC_SIZE))
    for q, tq in _queues(adapter, "tx"):
        if tq.tx_ring.base and tq.tx_ring.size:
            out.append(DmaBuffer(f"vmxnet3 txq{q} ring", tq.tx_ring.basePA.value_(),
                                 tq.tx_ring.size.value_() * COMP_DESC_SIZE))
        if tq.comp_ring.base and tq.comp_ring.size:
            out.append(DmaBuffer(f"vmxnet3 txq{q} completion ring", tq.comp_ring.basePA.value_(),
                                 tq.comp_ring.size.value_() * COMP_DESC_SIZE))
    return out


# struct vmxnet3_adapter is defined in drivers/net/vmxnet3/vmxnet3_int.h: module "vmxnet3"
DECODER = RingDecoder("vmxnet3", "1", ("vmxnet3",), ("vmxnet3",), decode_vmxnet3, vmxnet3_buffers)
