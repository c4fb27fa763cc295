"""What an IOMMU vendor's backend provides, as one record (pciutils' ``struct pci_methods``
is the model): the layers above call these and never name a vendor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import drgn

from dumpkit.iommu.logbase import LogDialect

__all__ = ["Backend"]


@dataclass(frozen=True)
class Backend:
    """One IOMMU vendor.

    :param name: the vendor as dumpkit reports it ("intel-vtd", "amd-vi", "arm-smmu")
    :param title: how a person names it ("Intel VT-d")
    :param detect: whether a kernel registered this vendor's units (``prog -> bool``);
        None for a vendor whose state is not read from memory yet
    :param collect: ``(prog, pci_bdfs) -> state`` with ``units``, ``entries``, ``mappings``,
        ``events`` and ``errors`` lists of :mod:`dumpkit.iommu.model` records
    :param log: the dialect that reads this vendor's kernel log lines (faults, table copies)
    :param dma_fault_kinds: the :class:`~dumpkit.iommu.logbase.FaultRecord` kinds of its log
        that name a requester and a DMA address: the faults resolved against the dump
    :param reporters: fragments of the names of the kernel functions that print its faults
        (a "NAME: N callbacks suppressed" line of one of them is lost fault records)
    :param tables: what a capture kernel's table-copy message of its log is about, by the
        record's ``iommu`` field ("intel-vtd-ir": "interrupt-remapping table")
    :param translation_tables: those of ``tables`` whose copy is when the capture kernel's
        IOMMU takes over DMA
    """

    name: str
    title: str
    detect: Callable[[drgn.Program], bool] | None
    collect: Callable[[drgn.Program, set[str]], Any] | None
    log: type[LogDialect] | None
    dma_fault_kinds: tuple[str, ...] = ()
    reporters: tuple[str, ...] = ()
    tables: Mapping[str, str] = field(default_factory=dict)
    translation_tables: frozenset[str] = frozenset()

    @property
    def reads_memory(self) -> bool:
        """Whether this backend reads the vendor's state from a dump (not only its log)."""
        return self.detect is not None and self.collect is not None
