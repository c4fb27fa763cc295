"""VT-d fault reasons under their former name (:mod:`dumpkit.iommu.vtd.reasons`)."""

from dumpkit.iommu.vtd.reasons import DMA_REMAP_REASONS, IRQ_REMAP_REASONS, SM_REASONS, vtd_fault_reason

__all__ = ["vtd_fault_reason", "DMA_REMAP_REASONS", "IRQ_REMAP_REASONS", "SM_REASONS"]
