"""The log parser under its former name (:mod:`dumpkit.iommu.faults`)."""

from dumpkit.iommu.faults import FSTS_BITS, LINE_MAX, FaultRecord, _strip, parse_lines, parse_log, parse_printk

__all__ = ["FaultRecord", "parse_log", "parse_lines", "parse_printk", "FSTS_BITS", "LINE_MAX", "_strip"]
