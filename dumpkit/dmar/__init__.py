"""Intel VT-d state read from a kernel's memory, and IOMMU fault records from any log."""

from dumpkit.dmar.faults import FaultRecord, parse_log, parse_printk

__all__ = ["FaultRecord", "parse_log", "parse_printk"]
