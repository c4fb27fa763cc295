"""VT-d second-level page tables read from RAM: IOVA -> physical mappings per device.

Table pages are read whole and decoded in one go; a corrupt table (a loop, a pointer
outside the dump, too many tables) gives per-entry errors and never a hang.
"""

from __future__ import annotations

import drgn

from dumpkit.iommu.model import Leaf, MappingRange, PageTableWalk, lookup, summarise
from dumpkit.iommu.pagewalk import MAX_TABLES, implausible_leaf, walk_tables

__all__ = ["Leaf", "MappingRange", "PageTableWalk", "walk_page_table", "summarise", "lookup"]

PAGE = 4096
LEVEL_BITS = 9
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE - 1)   # bits 51:12; the XD bit (63) and flags masked
PTE_READ, PTE_WRITE, PTE_LARGE = 1, 2, 1 << 7


def _entry(walk: PageTableWalk, level: int, i: int, iova: int, span: int, pte: int, _ctx, path: tuple):
    addr = pte & PTE_ADDR_MASK
    large = level > 1 and pte & PTE_LARGE
    if large and level > 3:
        # the format has 2 MiB and 1 GiB pages only: bit 7 is reserved above level 3
        walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}) {pte:#x}: a page-size bit where the format "
                           "has none; the entry is damaged, not counted")
        return None
    if level == 1 or large:
        if implausible_leaf(walk, level, i, iova, span, pte, addr):
            return None
        walk.leaves.append(Leaf(iova, addr, span, bool(pte & PTE_READ), bool(pte & PTE_WRITE), level, path))
        return None
    return addr, level - 1, iova, None, path


def walk_page_table(prog: drgn.Program, root: int, levels: int, max_tables: int = MAX_TABLES) -> PageTableWalk:
    """Walk a second-level page table; leaves come out in ascending IOVA order.

    :param root: physical address of the top-level table
    :param levels: 3, 4 or 5 (``agaw + 2``; the context entry's AW field)
    """
    if levels not in (3, 4, 5):
        walk = PageTableWalk(root, levels)
        walk.errors.append(f"unsupported number of levels {levels}")
        return walk
    return walk_tables(prog, root, levels, PTE_READ | PTE_WRITE, _entry, max_tables=max_tables)
