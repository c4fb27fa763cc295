"""Post-crash DMA evidence from device rings in the crashed kernel's memory: one small
decoder per driver behind ``ring_evidence()``."""

from __future__ import annotations

import drgn

from dumpkit.rings.base import QueueEvidence, RingEvidence
from dumpkit.target.debuginfo import module_debug_status
from dumpkit.rings.e1000e import decode_e1000e
from dumpkit.rings.nvme import decode_nvme
from dumpkit.rings.virtio import decode_virtio, virtio_bypasses_iommu

__all__ = ["RingEvidence", "QueueEvidence", "ring_evidence", "iommu_bypass", "DECODERS"]

DECODERS = {"e1000e": decode_e1000e, "nvme": decode_nvme, "virtio-pci": decode_virtio}
# Modules whose types each decoder reads (when they are modules, not built in): without
# their debug info the decoder cannot run, and the evidence says what to install.
DECODER_MODULES = {"e1000e": ("e1000e",), "nvme": ("nvme",), "virtio-pci": ("virtio_pci", "virtio_ring")}
# Drivers whose devices can be set up to DMA around the IOMMU (physical addresses).
BYPASS = {"virtio-pci": virtio_bypasses_iommu}


def _driver(pdev: drgn.Object) -> str | None:
    drv = pdev.dev.driver
    return drv.name.string_().decode() if drv else None


def _missing_module(prog: drgn.Program, driver: str | None) -> str | None:
    for module in DECODER_MODULES.get(driver or "", ()):
        reason = module_debug_status(prog, module)
        if reason:
            return reason
    return None


def iommu_bypass(prog: drgn.Program, pdev: drgn.Object) -> tuple[bool | None, str]:
    """Whether the driver set the device up to DMA with physical addresses, around the
    IOMMU: ``(True, why)``, ``(False, "")``, or ``(None, reason)`` when its state cannot
    be read (for example no debug info for the driver's module).

    :param pdev: ``struct pci_dev *``
    """
    driver = _driver(pdev)
    check = BYPASS.get(driver or "")
    if check is None:
        return False, ""
    reason = _missing_module(prog, driver)
    if reason:
        return None, reason
    try:
        return check(prog, pdev)
    except (drgn.FaultError, LookupError, ValueError, TypeError, AttributeError) as e:
        return None, f"driver state unreadable ({type(e).__name__}: {e})"


def ring_evidence(prog: drgn.Program, pdev: drgn.Object, translate=None) -> RingEvidence:
    """Decode the rings of one PCI function.

    :param pdev: ``struct pci_dev *``
    :param translate: optional ``iova -> physical address or None`` for the device
        (its IOMMU mappings); without it DMA addresses are taken as physical
    """
    name = pdev.dev.kobj.name.string_().decode()
    driver = _driver(pdev)
    decoder = DECODERS.get(driver or "")
    if decoder is None:
        return RingEvidence(name, driver, "no ring decoder",
                            note="no driver bound" if driver is None else f"no decoder for {driver}")
    reason = _missing_module(prog, driver)
    if reason:
        return RingEvidence(name, driver, "no debug info", note=reason)
    try:
        queues = decoder(prog, pdev)
    except (drgn.FaultError, LookupError, ValueError, TypeError, AttributeError) as e:
        return RingEvidence(name, driver, "error", note=f"{type(e).__name__}: {e}")
    if not queues:
        return RingEvidence(name, driver, "not set up", note="driver bound but no rings allocated")
    pages = set()
    for q in queues:
        for addr in q.dma_addresses:
            phys = translate(addr) if translate else addr
            if phys is not None:
                pages.add(phys & ~0xFFF)
    return RingEvidence(name, driver, "decoded", queues, phys_pages=sorted(pages))
