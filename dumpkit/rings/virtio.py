"""virtio-pci (any virtio device): used-ring index the device advanced beyond the
driver's last seen index."""

from __future__ import annotations

import drgn

from dumpkit.kernel import driver_data, has_member
from dumpkit.rings.base import QueueEvidence, RingDecoder, reads
from dumpkit.target.walk import bounded_list

__all__ = ["decode_virtio", "virtio_bypasses_iommu", "DECODER"]

VIRTIO_F_ACCESS_PLATFORM = 33


def virtio_bypasses_iommu(prog: drgn.Program, pdev: drgn.Object) -> tuple[bool, str]:
    """A virtio device that did not negotiate VIRTIO_F_ACCESS_PLATFORM uses physical
    addresses and is not translated by the IOMMU (``vring_use_dma_api()`` is false)."""
    vp_dev = driver_data(pdev.dev, "struct virtio_pci_device *")
    if not vp_dev:
        return False, ""
    if (vp_dev.vdev.features.value_() >> VIRTIO_F_ACCESS_PLATFORM) & 1:
        return False, ""
    return True, "virtio without VIRTIO_F_ACCESS_PLATFORM: its DMA bypasses the IOMMU"


def decode_virtio(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    vp_dev = driver_data(pdev.dev, "struct virtio_pci_device *")
    if not vp_dev:
        return []
    reads("struct virtio_pci_device", vp_dev)
    vring_vq = prog.type("struct vring_virtqueue")
    out = []
    for vq in bounded_list(vp_dev.vdev.vqs.address_of_(), "struct virtqueue", "list", "a virtio device's queues",
                           4096):
        vvq = drgn.container_of(vq, vring_vq, "vq")
        reads("struct vring_virtqueue", vvq)
        name = vq.name.string_().decode()
        if has_member(vvq.prog_, "struct vring_virtqueue", "packed_ring") and vvq.packed_ring:
            out.append(QueueEvidence(f"{name} (packed ring: not decoded)", 0, 0))
            continue
        vring = vvq.split.vring
        num = vring.num.value_()
        reads(f"virtio {name} used ring", vring.used.value_(), 4 + num * 8)
        reads(f"virtio {name} descriptor table", vring.desc.value_(), num * 16)
        used_idx = vring.used.idx.value_()
        last = vvq.last_used_idx.value_() & 0xFFFF
        n = (used_idx - last) & 0xFFFF
        addrs = []
        for k in range(min(n, num)):
            elem = vring.used.ring[(last + k) % num]
            desc = elem.id.value_()
            if desc < num:
                addrs.append(vring.desc[desc].addr.value_())
        out.append(QueueEvidence(name, num, n, last, used_idx, addrs))
    return out


DECODER = RingDecoder("virtio", "1", ("virtio-pci",), ("virtio_pci", "virtio_ring"), decode_virtio,
                      bypasses_iommu=virtio_bypasses_iommu)
