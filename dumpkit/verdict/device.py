"""One endpoint's evidence, read once before any of its claims (:func:`read_device` →
:class:`DeviceEvidence`): its struct pci_dev, what the IOMMU gives it, its rings decoded by
its driver's decoder (one call), the capture kernel's faults from it and the ports above it
that were reset."""

from __future__ import annotations

from dataclasses import dataclass

import drgn

from dumpkit.verdict.evidence import DumpEvidence

__all__ = ["DeviceEvidence", "read_device", "state_lookup"]


@dataclass
class DeviceEvidence:
    """What one endpoint's claims are judged from."""

    dev: object                     # the PCI function (dumpkit.pci)
    name: str
    pdev: drgn.Object | None        # its struct pci_dev, None where the kernel's list lacks it
    entry: object | None            # its IOMMU translation entry
    mapping: object | None          # its walked IOMMU page tables
    bypass: bool | None             # its DMA bypasses the IOMMU (None: unknown, bypass_why says why)
    bypass_why: str
    untranslated: bool              # its DMA addresses are physical addresses
    ring: object | None             # dumpkit.rings.RingEvidence, None without a struct pci_dev
    rings: list[dict]               # each decoded ring's state as data
    faults: list                    # the capture kernel's faults from it
    alias: str | None               # the note of faults that came under an alias requester id
    ancestors: list                 # the bridges and ports above it
    ports: list[str]                # those of them the capture kernel reset

    @property
    def bdf(self) -> str:
        return self.dev.bdf

    @property
    def full(self) -> bool:
        """Every ring decoded is full: the device ran out of entries and stopped by itself."""
        return bool(self.rings) and all(r["state"] == "full" for r in self.rings)

    def translate(self, iova: int) -> int | None:
        """A DMA address of the device as a physical address (None: not mapped)."""
        if self.untranslated:
            return iova
        hit = state_lookup(self.mapping, iova)
        return hit[0] if hit else None

    def ring_diff(self, prog: drgn.Program, later: drgn.Program):
        """The device's rings compared between the vmcore (``prog``) and the capture dump
        (``later``); None: no decoder names its buffers."""
        from dumpkit.overlap import compare_buffers
        from dumpkit.rings import dma_buffers

        try:
            buffers = dma_buffers(prog, self.pdev)
        except (drgn.FaultError, LookupError, ValueError, AttributeError):
            return None
        return compare_buffers(prog, later, buffers, self.translate) if buffers else None


def read_device(ev: DumpEvidence, dev) -> DeviceEvidence:
    """The endpoint's evidence from the dump's; its rings decoded once."""
    from dumpkit.rings import iommu_bypass, ring_evidence

    entry, mapping = ev.state.entry(dev.bdf), ev.state.mapping(dev.bdf)
    pdev = ev.pdevs.get(dev.bdf)
    bypass, bypass_why = iommu_bypass(ev.prog, pdev) if pdev is not None else (False, "")
    untranslated = bool(not ev.capture.have_iommu or bypass or entry is None
                        or entry.translation in ("pass-through", "untranslated"))
    ancestors = list(ev.tree.ancestors(dev.bdf))
    d = DeviceEvidence(dev, dev.device_name or dev.class_name or f"{dev.vendor:04x}:{dev.device:04x}", pdev,
                       entry, mapping, bypass, bypass_why, untranslated, None, [],
                       ev.faults_by_dev.get(dev.bdf, []), ev.alias_notes.get(dev.bdf), ancestors,
                       [a.bdf for a in ancestors if a.bdf in ev.reset])
    d.ring = ring_evidence(ev.prog, pdev, d.translate) if pdev is not None else None
    d.rings = _ring_records(d.ring)
    return d


def _ring_records(ring) -> list[dict]:
    """Each decoded ring's state as data (JSON, frames): name, size, completed entries the
    kernel never processed, entries still handed to the device, state."""
    if ring is None or ring.status != "decoded":
        return []
    return [{"name": q.name, "size": q.size, "completed": q.unprocessed, "device_free": q.device_free,
             "state": q.state} for q in ring.queues]


def state_lookup(mapping, iova: int):
    """A device's DMA address through its walked page tables (None: not mapped)."""
    from dumpkit.iommu.model import lookup

    if mapping is None or not mapping.leaves:
        return None
    return lookup(mapping.leaves, iova)
