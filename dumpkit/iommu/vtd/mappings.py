"""Per-device DMA mappings: the page tables the hardware uses (from context entries) and
the ones the kernel's domains own."""

from __future__ import annotations

import drgn
from drgn.helpers.linux.mm import virt_to_phys

from dumpkit.iommu.model import DeviceMappings, table_source
from dumpkit.iommu.vtd.pagetable import walk_page_table
from dumpkit.iommu.vtd.tables import ContextEntry
from dumpkit.kernel import device_iommu_group, device_name
from dumpkit.target.walk import bounded_list, pci_devices

__all__ = ["DeviceMappings", "collect_device_mappings", "kernel_domain_roots"]


def collect_device_mappings(prog: drgn.Program, entries: list[ContextEntry]) -> list[DeviceMappings]:
    """Walk the page table of every present context entry (one walk per distinct root).

    Pass-through entries map all memory and are reported without a walk. ``leaves`` is
    the walk's :class:`~dumpkit.iommu.pagewalk.LeafView` (no object per entry kept);
    ``ranges`` and ``summary`` come from its runs.
    """
    cache: dict[tuple[int, int], object] = {}
    out = []
    for e in entries:
        dm = DeviceMappings(e.bdf, "context entry", e.page_table,
                            None if e.address_width is None else (e.address_width - 30) // 9 + 2, e.translation)
        if e.errors:
            dm.errors.extend(e.errors)
        elif e.translation == "pass-through":
            dm.summary = {"ranges": None, "bytes": None, "writable_bytes": None, "pass_through": True}
        elif e.page_table:
            key = (e.page_table, dm.levels)
            if key not in cache:
                cache[key] = walk_page_table(prog, e.page_table, dm.levels)
            walk = cache[key]
            dm.leaves, dm.errors, dm.entries_decoded = walk.leaves, list(walk.errors), walk.entries_decoded
            dm.ranges, dm.summary = walk.summarise()
            dm.sources = [table_source(walk)]
        out.append(dm)
    return out


def kernel_domain_roots(prog: drgn.Program) -> dict[str, tuple[str, int, int]]:
    """For each PCI device: (first device of its IOMMU group, physical pgd, levels) of the
    group's current domain, as the kernel's debugfs walks it."""
    out = {}
    dmar_domain = prog.type("struct dmar_domain")
    for _name, pdev in pci_devices(prog)[0]:
        group = device_iommu_group(pdev.dev)
        if not group or not group.domain:
            continue
        first = next(iter(bounded_list(group.devices.address_of_(), "struct group_device", "list",
                                       "an IOMMU group's device list")), None)
        if first is None:
            continue
        domain = drgn.container_of(group.domain, dmar_domain, "domain")
        if not domain.pgd:
            continue
        out[device_name(pdev.dev)] = (device_name(first.dev),
                                                     virt_to_phys(domain.pgd).value_(), domain.agaw.value_() + 2)
    return out
