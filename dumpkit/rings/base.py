"""The interface of ring decoders: post-crash DMA evidence left in a device's rings."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RingEvidence", "QueueEvidence"]


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
    note says what to install) or "error"."""

    device: str
    driver: str | None
    status: str
    queues: list[QueueEvidence] = field(default_factory=list)
    note: str = ""
    phys_pages: list[int] = field(default_factory=list)

    @property
    def unprocessed(self) -> int | None:
        return sum(q.unprocessed for q in self.queues) if self.status == "decoded" else None
