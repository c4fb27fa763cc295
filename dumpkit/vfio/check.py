"""The VFIO container's mappings against the IOMMU's page tables for the same device.

Two records of one thing: type1's ``vfio_dma`` list (what the owner asked for) and the
page tables the IOMMU walks (what the device can reach). They agree unless a map or
unmap was cut short by the crash, or one of them is damaged; a mismatch is reported,
never hidden."""

from __future__ import annotations

from dataclasses import dataclass, field

from dumpkit.units import iec
from dumpkit.vfio.model import VfioOwner

__all__ = ["WalkCheck", "compare_with_walk"]


@dataclass
class WalkCheck:
    """:param agreed: bytes both records have, with the same write permission
    :param only_vfio: (iova, size) runs the owner mapped that the page tables lack
    :param only_tables: (iova, size) runs the page tables map outside every VFIO mapping
    :param permission: (iova, size) runs where the two disagree on write permission"""

    agreed: int = 0
    only_vfio: list[tuple[int, int]] = field(default_factory=list)
    only_tables: list[tuple[int, int]] = field(default_factory=list)
    permission: list[tuple[int, int]] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not (self.only_vfio or self.only_tables or self.permission)

    def text(self) -> str:
        """One line for evidence and renderers."""
        if self.agrees:
            return f"the VFIO mappings and the IOMMU page tables agree ({iec(self.agreed)})"
        parts = []
        for what, runs in (("mapped by the owner but not in the page tables", self.only_vfio),
                           ("in the page tables but in no VFIO mapping", self.only_tables),
                           ("with another write permission in the page tables", self.permission)):
            if runs:
                first = runs[0]
                parts.append(f"{iec(sum(n for _i, n in runs))} {what} (first at IOVA {first[0]:#x}, "
                             f"{len(runs)} run{'s' if len(runs) != 1 else ''})")
        return "the VFIO mappings and the IOMMU page tables disagree: " + "; ".join(parts)


def _add(runs: list[tuple[int, int]], start: int, size: int) -> None:
    if size <= 0:
        return
    if runs and runs[-1][0] + runs[-1][1] == start:
        runs[-1] = (runs[-1][0], runs[-1][1] + size)
    else:
        runs.append((start, size))


def compare_with_walk(owner: VfioOwner, ranges) -> WalkCheck:
    """Sweep both sorted interval lists once (linear in the number of ranges).

    :param ranges: the device's walked ranges (objects with ``iova``, ``size``, ``write``)
    """
    vfio = sorted((m.iova, m.end, m.write) for m in owner.mappings if m.iommu_mapped)
    walk = sorted((r.iova, r.iova + r.size, r.write) for r in ranges)
    check = WalkCheck()
    points = sorted({p for a, b, _w in vfio + walk for p in (a, b)})
    i = j = 0
    for lo, hi in zip(points, points[1:], strict=False):
        while i < len(vfio) and vfio[i][1] <= lo:
            i += 1
        while j < len(walk) and walk[j][1] <= lo:
            j += 1
        in_v = i < len(vfio) and vfio[i][0] <= lo
        in_w = j < len(walk) and walk[j][0] <= lo
        if in_v and in_w:
            if vfio[i][2] == walk[j][2]:
                check.agreed += hi - lo
            else:
                _add(check.permission, lo, hi - lo)
        elif in_v:
            _add(check.only_vfio, lo, hi - lo)
        elif in_w:
            _add(check.only_tables, lo, hi - lo)
    return check
