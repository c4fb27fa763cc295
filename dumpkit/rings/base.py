"""The interface of ring decoders: post-crash DMA evidence left in a device's rings, the
DMA buffers a driver's structures name (for fault correlation), and whether the driver
set its device up to bypass the IOMMU. One :class:`RingDecoder` per driver family;
third-party decoders register one through the ``dumpkit.rings`` entry-point group."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

import drgn

__all__ = ["RingEvidence", "QueueEvidence", "DmaBuffer", "RingDecoder", "reads", "read_trail"]

# (label, address, size) of each kernel object a decoder said it reads, in order
_TRAIL: contextvars.ContextVar[list | None] = contextvars.ContextVar("dumpkit_ring_trail", default=None)


def reads(label: str, obj: drgn.Object | int, size: int | None = None) -> None:
    """Record that the running decoder reads a kernel object, so the verdict can name
    what it read and, when a read fails, which object the page held.

    :param obj: a pointer (its target is the object) or an address with ``size``
    """
    trail = _TRAIL.get()
    if trail is None:
        return
    if isinstance(obj, drgn.Object):
        addr = obj.value_()
        if size is None:
            try:
                size = drgn.sizeof(obj.type_.type)
            except (TypeError, AttributeError, ValueError):
                size = 1
    else:
        addr = obj
    trail.append((label, addr, size or 1))


def read_trail() -> contextvars.ContextVar:
    """The context variable :func:`reads` appends to (set by the caller of a decoder)."""
    return _TRAIL


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
    sources: list[str] = field(default_factory=list)
    # entries the driver had handed to the device and the device had not used yet (from
    # the driver's own tail index); 0 with completions pending: the ring is full and the
    # device stopped by itself. None where the decoder cannot tell.
    device_free: int | None = None

    @property
    def state(self) -> str | None:
        """"full", "partly processed", "empty" (nothing pending), or None when unknown."""
        if self.unprocessed == 0:
            return "empty"
        if self.device_free is None:
            return None
        return "full" if self.device_free == 0 else "partly processed"


@dataclass
class RingEvidence:
    """Evidence for one endpoint. ``status`` is "decoded", "no ring decoder", "not set up"
    (driver bound but rings absent), "no debug info" (the driver's module has none: the
    note says what to install) or "error" (the note names the object that was unreadable).
    ``decoder`` names the decoder and its version; ``sources`` the kernel objects it read;
    ``unresolved`` counts completions whose buffer address could not be translated."""

    device: str
    driver: str | None
    status: str
    queues: list[QueueEvidence] = field(default_factory=list)
    note: str = ""
    phys_pages: list[int] = field(default_factory=list)
    decoder: str | None = None
    sources: list[str] = field(default_factory=list)
    unresolved: int = 0

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
