"""The IOMMU backends, declared once, in the order they are probed and their log dialects
are offered a line (pciutils' ``lib/init.c`` probe list is the model). A new vendor is a
package with a ``BACKEND`` record and one line here."""

from __future__ import annotations

import re

from dumpkit.iommu import amd, smmu, vtd
from dumpkit.iommu.backend import Backend

__all__ = ["BACKENDS", "DMA_FAULT_KINDS", "REPORTER", "TABLES", "TRANSLATION_TABLES"]

#: SMMU first: a v3 event's raw words continue it on the lines after, which the other
#: dialects must not take; VT-d before AMD-Vi keeps the vendor order of mixed reports.
BACKENDS: tuple[Backend, ...] = (smmu.BACKEND, vtd.BACKEND, amd.BACKEND)

#: fault kinds, of every vendor, that carry a requester and a DMA address
DMA_FAULT_KINDS: frozenset[str] = frozenset(k for b in BACKENDS for k in b.dma_fault_kinds)

#: what each table-copy record of a capture log is about, by its ``iommu`` field
TABLES: dict[str, str] = {k: v for b in BACKENDS for k, v in b.tables.items()}
#: the copies after which the capture kernel's IOMMU translates DMA
TRANSLATION_TABLES: frozenset[str] = frozenset(t for b in BACKENDS for t in b.translation_tables)

#: any vendor's fault-reporting function, by name
REPORTER = re.compile("|".join(re.escape(r) for b in BACKENDS for r in b.reporters), re.IGNORECASE)

