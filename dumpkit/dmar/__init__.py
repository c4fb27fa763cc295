"""IOMMU fault records from any log (VT-d, AMD-Vi, ARM SMMU, SERR, AER). The VT-d state
readers are the ``dumpkit.iommu.vtd`` backend."""

from dumpkit.dmar.faults import FaultRecord, parse_log, parse_printk

__all__ = ["FaultRecord", "parse_log", "parse_printk"]
