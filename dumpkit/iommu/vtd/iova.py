"""The IOVA allocator's view of a DMA domain: every allocated range, a superset of the
live mappings (freed ranges parked in the per-CPU caches stay allocated; reserved
windows are allocated too)."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.rbtree import rbtree_inorder_for_each_entry

from dumpkit.kernel import device_iommu_group, device_name, has_member

__all__ = ["IovaRange", "IovaAllocator", "collect_iova", "MSI_WINDOW"]

MSI_WINDOW = (0xFEE00000, 0xFEEFFFFF)
IOVA_ANCHOR = (1 << 64) - 1


@dataclass(frozen=True)
class IovaRange:
    """One allocated range; ``reserved`` names why it was reserved, if it was."""

    start: int
    end: int
    reserved: str | None


@dataclass
class IovaAllocator:
    """``superset_of_live_mappings`` is always True: read ranges as "may be mapped"."""

    device: str
    source: str
    granule: int | None
    ranges: list[IovaRange] = field(default_factory=list)
    superset_of_live_mappings: bool = True
    errors: list[str] = field(default_factory=list)


def _host_windows(prog: drgn.Program) -> list[tuple[int, int]]:
    from drgn.helpers.linux.pci import for_each_pci_root_bus

    from dumpkit.target.walk import bounded_list

    windows = []
    for bus in for_each_pci_root_bus(prog):
        bridge = drgn.container_of(bus.bridge, "struct pci_host_bridge", "dev")
        for entry in bounded_list(bridge.windows.address_of_(), "struct resource_entry", "node",
                                  "a host bridge's window list", 4096):
            res = entry.res
            if res.flags.value_() & 0x200:  # IORESOURCE_MEM
                windows.append((res.start.value_(), res.end.value_()))
    return windows


def _iova_domain(domain: drgn.Object) -> tuple[drgn.Object | None, str]:
    if has_member(domain.prog_, "struct iommu_domain", "iova_cookie"):
        cookie = domain.iova_cookie
        if not cookie:
            return None, "domain has no DMA-API cookie (identity or unmanaged domain)"
        if cookie.type.value_() != 0:
            return None, "MSI-only cookie"
        return cookie.iovad.address_of_(), "iommu_dma_cookie.iovad (>= 5.11)"
    dmar = drgn.container_of(domain, "struct dmar_domain", "domain")
    if has_member(dmar.prog_, "struct dmar_domain", "iovad"):
        return dmar.iovad.address_of_(), "dmar_domain.iovad (<= 5.10)"
    return None, "no IOVA allocator found in this kernel's domain types"


def collect_iova(prog: drgn.Program, pdev: drgn.Object, max_nodes: int = 1 << 20) -> IovaAllocator:
    """Allocated IOVA ranges of a PCI device's current domain.

    :param pdev: ``struct pci_dev *``
    """
    name = device_name(pdev.dev)
    group = device_iommu_group(pdev.dev)
    if not group or not group.domain:
        return IovaAllocator(name, "none", None, errors=["device has no IOMMU domain"])
    iovad, source = _iova_domain(group.domain)
    if iovad is None:
        return IovaAllocator(name, source, None)
    alloc = IovaAllocator(name, source, iovad.granule.value_())
    try:
        windows = [("MSI window", *MSI_WINDOW)] + [("PCI window", s, e) for s, e in _host_windows(prog)]
    except (drgn.FaultError, LookupError, AttributeError) as e:
        windows = [("MSI window", *MSI_WINDOW)]
        alloc.errors.append(f"PCI host bridge windows unreadable: {e}")
    shift = alloc.granule.bit_length() - 1
    try:
        for n, iova in enumerate(rbtree_inorder_for_each_entry("struct iova", iovad.rbroot.address_of_(), "node")):
            if n >= max_nodes:
                alloc.errors.append(f"more than {max_nodes} IOVA nodes: the tree is corrupt, stopped")
                break
            lo, hi = iova.pfn_lo.value_(), iova.pfn_hi.value_()
            if lo == IOVA_ANCHOR:
                continue
            start, end = lo << shift, ((hi + 1) << shift) - 1
            why = next((label for label, ws, we in windows if start >= ws and end <= we), None)
            alloc.ranges.append(IovaRange(start, end, why))
    except drgn.FaultError as e:
        alloc.errors.append(f"IOVA tree unreadable after {len(alloc.ranges)} ranges: {e}")
    return alloc
