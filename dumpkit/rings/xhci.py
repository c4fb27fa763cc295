"""xhci_hcd: event TRBs the controller wrote into the event ring beyond the driver's
dequeue pointer. The driver owns an event TRB while its cycle bit equals the ring's
``cycle_state``; it consumes from ``dequeue`` and flips ``cycle_state`` where the last
segment wraps to the first (xhci_handle_event, inc_deq). Transfer events name the
transfer TRB they complete, whose buffer pointer is where the controller moved data."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads

__all__ = ["decode_xhci", "xhci_hcd", "xhci_event_rings", "xhci_buffers", "DECODER"]

TRB_SIZE = 16
TRBS_PER_SEGMENT = 256      # event ring segments are one page of TRBs (no link TRBs)
TRB_CYCLE = 1
TRB_IDT = 1 << 6
TRB_TRANSFER, TRB_COMPLETION, TRB_PORT_STATUS = 32, 33, 34
MAX_SEGMENTS = 64
MAX_SLOTS = 256             # MAX_HC_SLOTS
EP_CTX_PER_DEV = 31


def xhci_hcd(prog: drgn.Program, pdev: drgn.Object) -> drgn.Object | None:
    """``struct xhci_hcd *``: the private data of the primary usb_hcd (hcd_to_xhci)."""
    hcd = driver_data(pdev.dev, "struct usb_hcd *")
    if not hcd:
        return None
    reads("struct usb_hcd", hcd)
    primary = hcd.primary_hcd
    if primary and primary.value_() != hcd.value_():
        hcd = primary
        reads("struct usb_hcd (primary)", hcd)
    xhci = drgn.Object(prog, "struct xhci_hcd *", value=hcd.hcd_priv.address_)
    reads("struct xhci_hcd", xhci)
    return xhci


def xhci_event_rings(prog: drgn.Program, xhci: drgn.Object) -> list[tuple[int, drgn.Object]]:
    """(interrupter number, struct xhci_ring *) of every event ring. 6.1 keeps one
    interrupter (``xhci->interrupter``); later kernels an array, earlier ones the ring
    itself (``xhci->event_ring``)."""
    t = xhci.type_.type
    key = "dumpkit.rings.xhci.layout"
    layout = prog.cache.get(key)
    if layout is None:
        layout = next(m for m in ("interrupters", "interrupter", "event_ring", None) if m is None or t.has_member(m))
        prog.cache[key] = layout
    if layout == "interrupters":
        out = []
        n = min(xhci.max_interrupters.value_(), 1024)
        if xhci.interrupters:
            reads("xhci interrupters (struct xhci_interrupter *[])", xhci.interrupters,
                  n * drgn.sizeof(xhci.interrupters.type_.type))
        for i in range(n if xhci.interrupters else 0):
            ir = xhci.interrupters[i]
            if ir:
                reads(f"struct xhci_interrupter {i}", ir)
            if ir and ir.event_ring:
                out.append((i, ir.event_ring))
        return out
    if layout == "interrupter":
        ir = xhci.interrupter
        if ir:
            reads("struct xhci_interrupter 0", ir)
        return [(0, ir.event_ring)] if ir and ir.event_ring else []
    if layout == "event_ring":
        return [(0, xhci.event_ring)] if xhci.event_ring else []
    return []


def _segments(ring: drgn.Object, what: str = "ring") -> list[drgn.Object]:
    """The ring's segments from its first, at most its ``num_segs``.

    :param what: how the ring is named in the record of objects read ("event ring 0")
    """
    reads(f"struct xhci_ring ({what})", ring)
    segs, seg = [], ring.first_seg
    n = min(ring.num_segs.value_(), MAX_SEGMENTS)
    while seg and len(segs) < n:
        reads(f"struct xhci_segment {len(segs)} of {what}", seg)
        segs.append(seg)
        seg = seg.next
        if seg.value_() == ring.first_seg.value_():
            break
    return segs


def _transfer_buffer(prog: drgn.Program, xhci: drgn.Object, control: int, ptr: int) -> int | None:
    """The buffer pointer of the transfer TRB at device address ``ptr`` on the endpoint
    ring the event names, or None when it cannot be found."""
    slot, ep_index = control >> 24, ((control >> 16) & 0x1F) - 1
    if not 0 < slot < MAX_SLOTS or not 0 <= ep_index < EP_CTX_PER_DEV:
        return None
    dev = xhci.devs[slot]
    if not dev:
        return None
    reads(f"struct xhci_virt_device (slot {slot})", dev)
    ring = dev.eps[ep_index].ring
    if not ring:
        return None
    what = f"slot {slot} endpoint {ep_index} transfer ring"
    for k, seg in enumerate(_segments(ring, what)):
        base = seg.dma.value_()
        if base <= ptr < base + TRBS_PER_SEGMENT * TRB_SIZE and (ptr - base) % TRB_SIZE == 0:
            reads(f"xhci {what} segment {k} TRB {(ptr - base) // TRB_SIZE}", seg.trbs.value_() + ptr - base, TRB_SIZE)
            lo, hi, _status, ctl = struct.unpack("<IIII", prog.read(seg.trbs.value_() + ptr - base, TRB_SIZE))
            return None if ctl & TRB_IDT else lo | hi << 32
    return None


def _event_ring(prog: drgn.Program, xhci: drgn.Object, num: int, ring: drgn.Object) -> QueueEvidence | None:
    segs = _segments(ring, f"event ring {num}")
    if not segs or not ring.dequeue or not ring.deq_seg:
        return None
    try:
        s = next(k for k, seg in enumerate(segs) if seg.value_() == ring.deq_seg.value_())
    except StopIteration:
        raise ValueError("xhci event ring: dequeue segment not on the ring") from None
    idx = (ring.dequeue.value_() - segs[s].trbs.value_()) // TRB_SIZE
    if not 0 <= idx < TRBS_PER_SEGMENT:
        raise ValueError("xhci event ring: dequeue pointer outside its segment")
    size = len(segs) * TRBS_PER_SEGMENT
    start = s * TRBS_PER_SEGMENT + idx
    cycle = ring.cycle_state.value_() & 1
    raw = {}
    n, addrs = 0, []
    while n < size:
        if s not in raw:
            reads(f"xhci event ring {num} segment {s}", segs[s].trbs.value_(), TRBS_PER_SEGMENT * TRB_SIZE)
            raw[s] = prog.read(segs[s].trbs.value_(), TRBS_PER_SEGMENT * TRB_SIZE)
        lo, hi, _status, control = struct.unpack_from("<IIII", raw[s], idx * TRB_SIZE)
        if control & TRB_CYCLE != cycle:
            break
        n += 1
        kind = (control >> 10) & 0x3F
        ptr = lo | hi << 32
        if kind == TRB_TRANSFER and ptr:
            buf = _transfer_buffer(prog, xhci, control, ptr)
            addrs.append(buf if buf is not None else ptr)
        elif kind == TRB_COMPLETION and ptr:
            addrs.append(ptr)
        idx += 1
        if idx == TRBS_PER_SEGMENT:
            idx = 0
            s += 1
            if s == len(segs):
                s, cycle = 0, cycle ^ 1
    end = s * TRBS_PER_SEGMENT + idx
    return QueueEvidence(f"event ring {num}", size, n, start, end, addrs)


def decode_xhci(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    xhci = xhci_hcd(prog, pdev)
    if xhci is None:
        return []
    out = []
    for num, ring in xhci_event_rings(prog, xhci):
        ev = _event_ring(prog, xhci, num, ring)
        if ev:
            out.append(ev)
    return out


def xhci_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """Event ring segments, the command ring and the device context base array."""
    xhci = xhci_hcd(prog, pdev)
    if xhci is None:
        return []
    out = []
    for num, ring in xhci_event_rings(prog, xhci):
        for k, seg in enumerate(_segments(ring)):
            out.append(DmaBuffer(f"xhci event ring {num} segment {k}", seg.dma.value_(), TRBS_PER_SEGMENT * TRB_SIZE))
    if xhci.cmd_ring:
        for k, seg in enumerate(_segments(xhci.cmd_ring)):
            out.append(DmaBuffer(f"xhci command ring segment {k}", seg.dma.value_(), TRBS_PER_SEGMENT * TRB_SIZE))
    if xhci.dcbaa:
        out.append(DmaBuffer("xhci device context base array", xhci.dcbaa.dma.value_(),
                             len(xhci.dcbaa.dev_context_ptrs) * 8))
    return out


# struct xhci_hcd and the ring types are defined in drivers/usb/host/xhci.h: module
# "xhci_hcd" (xhci_pci binds the PCI function under the driver name "xhci_hcd")
DECODER = RingDecoder("xhci", "1", ("xhci_hcd",), ("xhci_hcd",), decode_xhci, xhci_buffers)
