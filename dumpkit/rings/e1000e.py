"""e1000e: RX descriptors the NIC wrote back (DD set) beyond the driver's clean index."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads

__all__ = ["decode_e1000e", "e1000e_adapter", "e1000e_buffers", "DECODER"]

E1000_RXD_STAT_DD = 0x01
DESC_SIZE = 16
# e1000e's refill (e1000_alloc_rx_buffers, and _ps) writes the tail register only when the
# index it fills is a multiple of E1000_RX_BUFFER_WRITE (netdev.c); the jumbo refill writes
# next_to_use - 1 at the end of each refill
RX_BUFFER_WRITE = 16
BATCHED_REFILLS = ("e1000_alloc_rx_buffers", "e1000_alloc_rx_buffers_ps")
JUMBO_REFILL = "e1000_alloc_jumbo_rx_buffers"


def e1000e_adapter(prog: drgn.Program, pdev: drgn.Object) -> tuple[drgn.Object, drgn.Object] | None:
    """(net_device *, e1000_adapter *) of an e1000e function, or None before probe.

    e1000 and e1000e both define ``struct e1000_adapter``: take e1000e's by its header."""
    from drgn.helpers.linux.net import netdev_priv

    netdev = driver_data(pdev.dev, "struct net_device *")
    if not netdev:
        return None
    reads("struct net_device", netdev)
    try:
        adapter_t = prog.type("struct e1000_adapter", "e1000e/e1000.h")
    except LookupError:
        adapter_t = prog.type("struct e1000_adapter")
    return netdev, drgn.cast(prog.pointer_type(adapter_t), netdev_priv(netdev))


def decode_e1000e(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    found = e1000e_adapter(prog, pdev)
    if found is None:
        return []
    netdev, adapter = found
    reads("struct e1000_adapter", adapter)
    ring = adapter.rx_ring
    if not ring:
        return []
    reads("struct e1000_ring rx_ring", ring)
    if not ring.desc or not ring.count:
        return []
    count, clean = ring.count.value_(), ring.next_to_clean.value_()
    reads("e1000e RX descriptor ring", ring.desc.value_(), count * DESC_SIZE)
    reads("e1000e rx buffer_info array", ring.buffer_info.value_(), count * drgn.sizeof(ring.buffer_info[0]))
    raw = prog.read(ring.desc.value_(), count * DESC_SIZE)
    unprocessed, addrs, i = 0, [], clean
    # The extended write-back format puts status_error in the upper half; DD set means
    # the NIC completed the descriptor. The driver cleans in order from next_to_clean.
    while unprocessed < count:
        status, = struct.unpack_from("<I", raw, i * DESC_SIZE + 8)
        if not status & E1000_RXD_STAT_DD:
            break
        addrs.append(ring.buffer_info[i].dma.value_())
        unprocessed += 1
        i = (i + 1) % count
    free = _device_free(prog, adapter, count, ring.next_to_use.value_(), i) if unprocessed else None
    return [QueueEvidence(f"{netdev.name.string_().decode()} rx", count, unprocessed, clean, i, addrs,
                          device_free=free)]


def _hardware_tail(prog: drgn.Program, adapter: drgn.Object, count: int, next_to_use: int) -> int | None:
    """The RX tail register's value as the driver last wrote it (the NIC owns the
    descriptors from its head up to, not including, the tail), or None when the refill
    function is not one whose tail writes are known."""
    try:
        refill = prog.symbol(adapter.alloc_rx_buf.value_()).name
    except (LookupError, AttributeError, drgn.FaultError):
        return None
    last_filled = (next_to_use - 1) % count
    if refill in BATCHED_REFILLS:
        return last_filled & ~(RX_BUFFER_WRITE - 1)
    if refill == JUMBO_REFILL:
        return last_filled
    return None


def _device_free(prog: drgn.Program, adapter: drgn.Object, count: int, next_to_use: int,
                 first_not_done: int) -> int | None:
    """Descriptors the NIC still had to write into: from the first one it had not
    completed up to the tail it was given. 0 means the ring was full and the NIC stopped
    by itself; a first-not-done at or past the tail (in the filled but not yet handed-over
    batch) is full too."""
    tail = _hardware_tail(prog, adapter, count, next_to_use)
    if tail is None:
        return None
    if (first_not_done - tail) % count < (next_to_use - tail) % count or first_not_done == tail:
        return 0
    return (tail - first_not_done) % count


def e1000e_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """The RX and TX descriptor rings."""
    found = e1000e_adapter(prog, pdev)
    if found is None:
        return []
    adapter = found[1]
    return [DmaBuffer(label, ring.dma.value_(), ring.size.value_())
            for label, ring in (("e1000e RX descriptor ring", adapter.rx_ring),
                                ("e1000e TX descriptor ring", adapter.tx_ring)) if ring]


DECODER = RingDecoder("e1000e", "1", ("e1000e",), ("e1000e",), decode_e1000e, e1000e_buffers)
