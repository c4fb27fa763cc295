"""VT-d second-level page tables read from RAM: IOVA -> physical mappings per device.

Table pages are read whole and decoded in one go; a corrupt table (a loop, a pointer
outside the dump, too many tables) gives per-entry errors and never a hang.
"""

from __future__ import annotations

import drgn
import numpy as np

from dumpkit.iommu.model import Leaf, MappingRange, PageTableWalk, lookup, summarise

__all__ = ["Leaf", "MappingRange", "PageTableWalk", "walk_page_table", "summarise", "lookup"]

PAGE = 4096
LEVEL_BITS = 9
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE - 1)   # bits 51:12; the XD bit (63) and flags masked
PTE_READ, PTE_WRITE, PTE_LARGE = 1, 2, 1 << 7
MAX_TABLES = 1 << 18                            # 1 GiB of table pages: far beyond any real domain


def _present(page: bytes) -> list[tuple[int, int]]:
    """(index, value) of the present entries of a table page, decoded in one pass."""
    words = np.frombuffer(page, dtype="<u8")
    idx = np.flatnonzero(words & 3)
    return list(zip(idx.tolist(), words[idx].tolist(), strict=True))


def walk_page_table(prog: drgn.Program, root: int, levels: int, max_tables: int = MAX_TABLES) -> PageTableWalk:
    """Walk a second-level page table; leaves come out in ascending IOVA order.

    :param root: physical address of the top-level table
    :param levels: 3, 4 or 5 (``agaw + 2``; the context entry's AW field)
    """
    walk = PageTableWalk(root, levels)
    seen: set[int] = set()

    def visit(table: int, level: int, base: int, path: tuple[int, ...]) -> None:
        if table in seen:
            walk.errors.append(f"level {level} table {table:#x} (IOVA {base:#x}) is referenced twice: a loop "
                               "or a corrupt pointer; not followed again")
            return
        if len(seen) >= max_tables:
            walk.errors.append(f"more than {max_tables} table pages: walk stopped at IOVA {base:#x}")
            return
        seen.add(table)
        try:
            present = _present(prog.read(table, PAGE, True))
        except drgn.FaultError as e:
            walk.errors.append(f"level {level} table {table:#x} (IOVA {base:#x}) is unreadable in the dump: {e}")
            return
        walk.tables_read += 1
        walk.entries_decoded += 512
        span = 1 << (12 + LEVEL_BITS * (level - 1))
        for i, pte in present:
            iova = base + i * span
            addr = pte & PTE_ADDR_MASK
            if level == 1 or pte & PTE_LARGE:
                walk.leaves.append(Leaf(iova, addr, span, bool(pte & PTE_READ), bool(pte & PTE_WRITE), level,
                                        path + (pte,)))
            else:
                visit(addr, level - 1, iova, path + (pte,))

    if levels not in (3, 4, 5):
        walk.errors.append(f"unsupported number of levels {levels}")
        return walk
    visit(root & ~(PAGE - 1), levels, 0, ())
    return walk
