"""e1000 (legacy 8254x): receive descriptors the NIC wrote back (DD set) beyond the
driver's ``next_to_clean``, and transmit packets whose end-of-packet descriptor the NIC
marked done that the driver never cleaned.

e1000 and e1000e both define ``struct e1000_adapter``; the type is taken from e1000's
own header (``e1000/e1000.h``)."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads

__all__ = ["decode_e1000", "e1000_adapter", "e1000_buffers", "DECODER"]

E1000_RXD_STAT_DD = 0x01   # struct e1000_rx_desc.status
E1000_TXD_STAT_DD = 0x01   # struct e1000_tx_desc.upper.data
DESC_SIZE = 16             # legacy RX and TX descriptors
RX_STATUS_OFFSET = 12      # buffer_addr (8), length (2), csum (2), status (1)
TX_UPPER_OFFSET = 12       # buffer_addr (8), lower (4), upper (4)
MAX_QUEUES = 64


def _adapter_type(prog: drgn.Program) -> drgn.Type:
    key = "dumpkit.rings.e1000.adapter_type"
    t = prog.cache.get(key)
    if t is None:
        try:
            t = prog.type("struct e1000_adapter", "e1000/e1000.h")
        except LookupError:
            t = prog.type("struct e1000_adapter")
        # e1000's adapter points at struct e1000_rx_ring, e1000e's at struct e1000_ring
        ring = t.member("rx_ring").type
        if ring.type.tag != "e1000_rx_ring":
            raise LookupError("struct e1000_adapter of e1000 (e1000/e1000.h) not found, only e1000e's")
        prog.cache[key] = t
    return t


def e1000_adapter(prog: drgn.Program, pdev: drgn.Object) -> tuple[drgn.Object, drgn.Object] | None:
    """(net_device *, e1000_adapter *) of an e1000 function, or None before probe."""
    from drgn.helpers.linux.net import netdev_priv

    netdev = driver_data(pdev.dev, "struct net_device *")
    if not netdev:
        return None
    reads("struct net_device", netdev)
    return netdev, drgn.cast(prog.pointer_type(_adapter_type(prog)), netdev_priv(netdev))


def _rings(adapter: drgn.Object, kind: str) -> list[tuple[int, drgn.Object]]:
    base = getattr(adapter, f"{kind}_ring")
    if not base:
        return []
    n = max(0, min(getattr(adapter, f"num_{kind}_queues").value_(), MAX_QUEUES))
    out = []
    for q in range(n):
        reads(f"struct e1000_{kind}_ring {kind}{q}", base + q)
        out.append((q, base[q]))
    return out


def _read_descriptors(prog: drgn.Program, kind: str, q: int, ring: drgn.Object, count: int) -> bytes:
    """The descriptor ring's bytes, recording it and the buffer_info array beside it."""
    reads(f"e1000 {kind.upper()} descriptor ring {q}", ring.desc.value_(), count * DESC_SIZE)
    reads(f"e1000 {kind}{q} buffer_info array", ring.buffer_info.value_(), count * drgn.sizeof(ring.buffer_info[0]))
    return prog.read(ring.desc.value_(), count * DESC_SIZE)


def _rx_queue(prog: drgn.Program, name: str, q: int, ring: drgn.Object) -> QueueEvidence | None:
    count, clean = ring.count.value_(), ring.next_to_clean.value_()
    if not ring.desc or not count or clean >= count:
        return None
    raw = _read_descriptors(prog, "rx", q, ring, count)
    n, addrs, i = 0, [], clean
    # e1000_clean_rx_irq: in order from next_to_clean while the descriptor's DD is set;
    # it clears status when it hands the buffer back
    while n < count:
        if not raw[i * DESC_SIZE + RX_STATUS_OFFSET] & E1000_RXD_STAT_DD:
            break
        addrs.append(ring.buffer_info[i].dma.value_())
        n += 1
        i = (i + 1) % count
    return QueueEvidence(name, count, n, clean, i, addrs)


def _tx_queue(prog: drgn.Program, name: str, q: int, ring: drgn.Object) -> QueueEvidence | None:
    count, clean, use = ring.count.value_(), ring.next_to_clean.value_(), ring.next_to_use.value_()
    if not ring.desc or not count or clean >= count or use >= count:
        return None
    raw = _read_descriptors(prog, "tx", q, ring, count)
    n, addrs, i, walked = 0, [], clean, 0
    # e1000_clean_tx_irq: a packet is done when the descriptor its first buffer's
    # next_to_watch names (its last one) has DD; the driver zeroes upper.data on cleaning
    while i != use and walked < count:
        eop = ring.buffer_info[i].next_to_watch.value_()
        if eop >= count:
            break
        upper, = struct.unpack_from("<I", raw, eop * DESC_SIZE + TX_UPPER_OFFSET)
        if not upper & E1000_TXD_STAT_DD:
            break
        span = (eop - i) % count + 1
        if walked + span > count:
            break
        for k in range(span):
            dma = ring.buffer_info[(i + k) % count].dma.value_()
            if dma:
                addrs.append(dma)
        n += 1
        walked += span
        i = (eop + 1) % count
    return QueueEvidence(name, count, n, clean, i, addrs)


def decode_e1000(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    found = e1000_adapter(prog, pdev)
    if found is None:
        return []
    netdev, adapter = found
    dev = netdev.name.string_().decode()
    reads("struct e1000_adapter", adapter)
    out = []
    for q, ring in _rings(adapter, "rx"):
        ev = _rx_queue(prog, f"{dev} rx{q}", q, ring)
        if ev:
            out.append(ev)
    for q, ring in _rings(adapter, "tx"):
        ev = _tx_queue(prog, f"{dev} tx{q}", q, ring)
        if ev:
            out.append(ev)
    return out


def e1000_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """The RX and TX descriptor rings of every queue."""
    found = e1000_adapter(prog, pdev)
    if found is None:
        return []
    adapter = found[1]
    out = []
    for kind, label in (("rx", "RX"), ("tx", "TX")):
        for q, ring in _rings(adapter, kind):
            if ring.desc and ring.size:
                out.append(DmaBuffer(f"e1000 {label} descriptor ring {q}", ring.dma.value_(), ring.size.value_()))
    return out


DECODER = RingDecoder("e1000", "1", ("e1000",), ("e1000",), decode_e1000, e1000_buffers)
