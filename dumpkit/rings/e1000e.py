"""e1000e: RX descriptors the NIC wrote back (DD set) beyond the driver's clean index."""

from __future__ import annotations

import struct

import drgn

from dumpkit.rings.base import QueueEvidence

__all__ = ["decode_e1000e"]

E1000_RXD_STAT_DD = 0x01
DESC_SIZE = 16


def decode_e1000e(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    from drgn.helpers.linux.net import netdev_priv

    netdev = drgn.cast("struct net_device *", pdev.dev.driver_data)
    if not netdev:
        return []
    adapter = drgn.cast("struct e1000_adapter *", netdev_priv(netdev))
    ring = adapter.rx_ring
    if not ring or not ring.desc or not ring.count:
        return []
    count, clean = ring.count.value_(), ring.next_to_clean.value_()
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
    return [QueueEvidence(f"{netdev.name.string_().decode()} rx", count, unprocessed, clean, i, addrs)]
