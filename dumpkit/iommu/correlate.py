"""Tie fault records to the first kernel: which device asked, and what its faulting
address meant in the crashed kernel's page tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

from dumpkit.iommu.backends import DMA_FAULT_KINDS
from dumpkit.iommu.logbase import FaultRecord
from dumpkit.iommu.model import DeviceMappings, lookup
from dumpkit.pci.collect import PciTree
from dumpkit.rings import DmaBuffer, dma_buffers

__all__ = ["FaultCorrelation", "correlate_faults"]


@dataclass
class FaultCorrelation:
    """One fault seen against the dump. Fields that could not be resolved are None, with
    the reason in ``note``. ``devices`` lists every function that can send DMA with the
    fault's requester id (itself, or the functions behind a bridge or alias quirk that
    use it); ``device`` is set when that is exactly one."""

    fault: FaultRecord
    device: str | None
    driver: str | None
    phys: int | None
    readable: bool | None
    writable: bool | None
    buffer: str | None
    note: str = ""
    devices: list[str] = field(default_factory=list)


def _find_device(tree: PciTree, requester: str | None) -> tuple[str | None, str]:
    if requester is None:
        return None, "fault has no requester"
    if len(requester) > 7:
        return requester, ""
    matches = sorted({d.bdf[:5] for d in tree} or {"0000:"})
    if len(matches) == 1:
        return matches[0] + requester, ""
    return None, f"{requester} is ambiguous across segments: {', '.join(m + requester for m in matches)}"


def _senders(prog: drgn.Program, tree: PciTree, requester: str) -> tuple[list[str], str]:
    """The functions that can send DMA with this requester id, and how (DMA aliases)."""
    from dumpkit.iommu.aliases import devices_for_requester

    found = [a for a in devices_for_requester(prog, requester) if (d := tree.get(a.device)) and not d.is_bridge]
    if not found:
        if tree.get(requester):
            return [requester], ""
        return [], f"no function {requester} in the dump's PCI tree, and no function uses it as a DMA alias"
    aliased = [a for a in found if a.device != requester]
    note = "; ".join(f"{a.device} through {a.via}" for a in aliased)
    return [a.device for a in found], (f"requester id {requester} is a DMA alias of {note}" if aliased else "")


def correlate_faults(prog: drgn.Program, tree: PciTree, mappings: list[DeviceMappings],
                     faults: list[FaultRecord], entries: list | None = None) -> list[FaultCorrelation]:
    """Resolve each DMA fault's requester and address in the dumped kernel.

    :param prog: the first (crashed) kernel
    :param mappings: that kernel's per-device mappings (context-entry page tables)
    :param entries: its translation entries: a device whose translation is unknown (its
        tables unreadable) has no mappings, and that must not read as "none mapped"
    """
    unknown = {e.bdf: e for e in entries or () if e.translation == "unknown"}
    from dumpkit.target.walk import pci_devices

    by_device = {m.device: m for m in mappings}
    pdevs = dict(pci_devices(prog)[0])
    buffers_cache: dict[str, list[DmaBuffer]] = {}
    out = []
    for f in faults:
        if f.kind not in DMA_FAULT_KINDS or f.address is None:
            continue
        requester, note = _find_device(tree, f.requester)
        corr = FaultCorrelation(f, None, None, None, None, None, None, note)
        out.append(corr)
        if requester is None:
            continue
        corr.devices, corr.note = _senders(prog, tree, requester)
        if len(corr.devices) != 1:
            if corr.devices:
                corr.note += " (which of them sent it, the fault cannot tell)"
            continue
        bdf = corr.device = corr.devices[0]
        dev = tree.get(bdf)
        corr.driver = dev.driver if dev else None
        dm = by_device.get(bdf)
        prefix = corr.note + "; " if corr.note else ""
        hit = lookup(dm.leaves, f.address) if dm is not None and dm.leaves else None
        if hit is None and dm is not None and dm.errors:
            # a table the dump lost may hold the mapping: say so, never "not mapped"
            corr.note = prefix + f"whether {f.address:#x} was mapped for {bdf} is unknown: {dm.errors[0]}"
            continue
        if bdf in unknown:
            why = unknown[bdf].detail.get("reason") or "; ".join(unknown[bdf].errors) or "its tables are unreadable"
            corr.note = prefix + f"whether {f.address:#x} was mapped for {bdf} is unknown: {why}"
            continue
        if dm is None or not dm.leaves:
            corr.note = prefix + "the device had no page-table mappings in the dumped kernel"
            continue
        if hit is None:
            corr.note = prefix + f"{f.address:#x} was not mapped for {bdf} in the dumped kernel"
            continue
        corr.phys, corr.readable, corr.writable = hit
        if bdf not in buffers_cache:
            try:
                buffers_cache[bdf] = dma_buffers(prog, pdevs[bdf])
            except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
                buffers_cache[bdf] = []
                corr.note = f"driver buffers unreadable: {e}"
        corr.buffer = next((b.label for b in buffers_cache[bdf] if b.iova <= f.address < b.iova + max(b.size, 1)),
                           None)
        if corr.buffer is None and dev is not None and dev.vfio is not None:
            # a VFIO owner's IOVA space is its own: name the owner's buffer
            corr.buffer = dev.vfio.describe_iova(f.address)
    return out
