"""Did a device keep writing while the capture kernel ran? Two snapshots of the crashed
kernel's memory taken after the capture kernel took over the IOMMU — the vmcore (read by
the capture kernel's userspace, after its IOMMU setup) and a dump of the running capture
kernel that holds the same physical memory (``--capture-dump``, e.g. QMP
``dump-guest-memory``) — differ in a device's rings only if something wrote them between
the two. The capture kernel never writes the crashed kernel's memory, so a difference is
the device's DMA while the capture kernel owned the IOMMU (observed); no difference says
nothing about the time before the first snapshot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import drgn

__all__ = ["RingDiff", "compare_buffers"]

PAGE = 4096


@dataclass
class RingDiff:
    """``changed`` bytes of ``compared`` differ between the two snapshots, per buffer label
    in ``where``; ``skipped`` says what could not be compared (unmapped, not in a dump)."""

    compared: int = 0
    changed: int = 0
    where: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _pieces(iova: int, size: int, translate: Callable[[int], int | None]):
    """(label offset, physical address, length) of each page-sized piece of a DMA buffer;
    a piece whose address does not translate has physical address None."""
    off = 0
    while off < size:
        n = min(PAGE - ((iova + off) % PAGE), size - off)
        yield off, translate(iova + off), n
        off += n


def compare_buffers(first: drgn.Program, later: drgn.Program, buffers,
                    translate: Callable[[int], int | None]) -> RingDiff:
    """Compare a device's DMA buffers (:class:`dumpkit.rings.DmaBuffer`, device addresses)
    between two programs holding the same physical memory at two times.

    :param translate: the device's address -> physical address (None: not mapped)
    """
    out = RingDiff()
    for b in buffers:
        for _off, phys, n in _pieces(b.iova, b.size, translate):
            if phys is None:
                out.skipped.append(f"{b.label}: {b.iova:#x} not mapped")
                continue
            try:
                a, c = first.read(phys, n, True), later.read(phys, n, True)
            except drgn.FaultError as e:
                out.skipped.append(f"{b.label} @{phys:#x}: not in both dumps ({e})")
                continue
            out.compared += n
            diff = sum(x != y for x, y in zip(a, c, strict=True)) if a != c else 0
            if diff:
                out.changed += diff
                out.where[b.label] = out.where.get(b.label, 0) + diff
    return out
