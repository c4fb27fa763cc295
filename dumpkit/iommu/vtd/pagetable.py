"""VT-d page tables read from RAM: IOVA -> physical mappings per device. Legacy-mode and
second-stage tables, and first-stage ones (scalable mode, PGTT 1): what is read of a leaf is
laid out alike in both formats (bit 0 read / present, bit 1 write, bit 7 page size, the
address in bits 51:12; the first-stage XD bit 63 is masked with the flags).

Table pages are read whole and decoded a page at a time into runs of leaves
(:mod:`dumpkit.iommu.pagewalk`); a corrupt table (a loop, a pointer outside the dump, too
many tables) gives per-entry errors and never a hang.
"""

from __future__ import annotations

import drgn

from dumpkit.iommu.model import Leaf, MappingRange, PageTableWalk, lookup, summarise
from dumpkit.iommu.pagewalk import MAX_TABLES, TableFormat, TableWalk, implausible_leaf, new_walk, walk_tables

__all__ = ["Leaf", "MappingRange", "PageTableWalk", "TableWalk", "walk_page_table", "summarise", "lookup", "FORMAT"]

PAGE = 4096
LEVEL_BITS = 9
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE - 1)   # bits 51:12; the XD bit (63) and flags masked
PTE_READ, PTE_WRITE, PTE_LARGE = 1, 2, 1 << 7


def _entry(walk: TableWalk, level: int, i: int, iova: int, span: int, pte: int, _ctx, path: tuple):
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
        walk.add_leaf(iova, addr, span, bool(pte & PTE_READ), bool(pte & PTE_WRITE), level, path)
        return None
    return addr, level - 1, iova, None, path


def _plain(level: int) -> tuple[int, int] | None:
    """Every present entry of a last-level table is a 4 KiB page; at levels 2 and 3 an
    entry with the page-size bit is a 2 MiB / 1 GiB page."""
    if level == 1:
        return 0, 0
    return (PTE_LARGE, PTE_LARGE) if level <= 3 else None


def _perm(pte: int, _ctx) -> tuple[bool, bool]:
    return bool(pte & PTE_READ), bool(pte & PTE_WRITE)


FORMAT = TableFormat(PTE_READ | PTE_WRITE, PTE_ADDR_MASK, _plain, _perm, _entry)


def walk_page_table(prog: drgn.Program, root: int, levels: int, max_tables: int = MAX_TABLES) -> TableWalk:
    """Walk a second- or first-stage page table; leaves come out in ascending IOVA order
    (``walk.leaves``, made on demand from ``walk.runs``; ``walk.summarise()`` the ranges).

    :param root: physical address of the top-level table
    :param levels: 3, 4 or 5 (``agaw + 2``; the context entry's AW field)
    """
    if levels not in (3, 4, 5):
        return new_walk(root, levels, FORMAT, f"unsupported number of levels {levels}")
    return walk_tables(prog, root, levels, FORMAT, max_tables=max_tables)
