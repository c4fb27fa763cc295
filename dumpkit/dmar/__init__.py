"""Former home of the log parser and the VT-d readers, kept so that ``dumpkit.dmar.faults``
imports keep working: the parser is :mod:`dumpkit.iommu.faults`, the VT-d state readers
are the :mod:`dumpkit.iommu.vtd` backend."""

from dumpkit.iommu.faults import FaultRecord, parse_log, parse_printk

__all__ = ["FaultRecord", "parse_log", "parse_printk"]
