"""The interface of ring decoders: post-crash DMA evidence left in a device's rings, the
DMA buffers a driver's structures name (for fault correlation), and whether the driver
set its device up to bypass the IOMMU. One :class:`RingDecoder` per driver family;
third-party decoders register one through the ``dumpkit.rings`` entry-point group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import drgn

__all__ = ["RingEvidence", "QueueEvidence", "DmaBuffer", "RingDecoder"]


@dataclass
class QueueEvidence:
    """One ring. ``unprocessed`` counts entries the device completed that the kernel never
    processed; ``dma_addresses`` are where those completions' buffers were (device view)."""

    name: str
    size: int
    unprocessed: int
    driver_index: int | None = None
    device_index: int | None = None
    dma_addresses: list[int] = field(default_factory=list)


@dataclass
class RingEvidence:
    """Evidence for one endpoint. ``status`` is "decoded", "no ring decoder", "not set up"
    (driver bound but rings absent), "no debug info" (the driver's module has none: the
    note says what to install) or "error". ``decoder`` names the decoder and its version."""

    device: str
    driver: str | None
    status: str
    queues: list[QueueEvidence] = field(default_factory=list)
    note: str = ""
    phys_pages: list[int] = field(default_factory=list)
    decoder: str | None = None

    @property
    def unprocessed(self) -> int | None:
        return sum(q.unprocessed for q in self.queues) if self.status == "decoded" else None


@dataclass(frozen=True)
class DmaBuffer:
    """A DMA buffer a driver's structures name: ``label`` says what it is
    ("e1000e RX descriptor ring"), ``iova`` is the device's view of its address."""

    label: str
    iova: int
    size: int


Decode = Callable[[drgn.Program, drgn.Object], list[QueueEvidence]]
Buffers = Callable[[drgn.Program, drgn.Object], list[DmaBuffer]]
Bypass = Callable[[drgn.Program, drgn.Object], tuple[bool, str]]


@dataclass(frozen=True)
class RingDecoder:
    """What a decoder declares and provides.

    :param drivers: PCI driver names it serves (``pdev->dev.driver->name``)
    :param modules: kernel modules whose types it reads; without their debug info it is
        not run and the evidence says which package to install
    :param decode: ``(prog, struct pci_dev *) -> [QueueEvidence]``; an empty list means
        the driver allocated no rings
    :param buffers: ``(prog, struct pci_dev *) -> [DmaBuffer]`` for fault correlation
    :param bypasses_iommu: ``(prog, struct pci_dev *) -> (bool, why)``: the driver set the
        device up to use physical addresses
    """

    name: str
    version: str
    drivers: tuple[str, ...]
    modules: tuple[str, ...]
    decode: Decode
    buffers: Buffers | None = None
    bypasses_iommu: Bypass | None = None
