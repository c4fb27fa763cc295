"""AMD-Vi v1 I/O page tables read from RAM (1 to 6 levels, large pages through
next-level 0 at a higher level or next-level 7 with the size encoded in the address,
skipped levels). Table pages are read whole and decoded a page at a time into runs of
leaves (:mod:`dumpkit.iommu.pagewalk`); loops and pointers outside the dump end in
errors, never a hang."""

from __future__ import annotations

import drgn

from dumpkit.iommu.pagewalk import MAX_TABLES, PAGE, TableFormat, TableWalk, implausible_leaf, new_walk, walk_tables

__all__ = ["walk_v1", "MAX_TABLES", "FORMAT"]

ADDR_MASK = 0x000FFFFFFFFFF000
PTE_PR, PTE_IR, PTE_IW = 1, 1 << 61, 1 << 62


def _size_from_address(pte: int) -> int:
    """Next-level 7: the page size is 2 << (index of the lowest 0 bit from bit 12)."""
    v = pte | 0xFFF
    bit = (~v & (v + 1)).bit_length() - 1
    return 1 << (bit + 1)


def _entry(walk: TableWalk, level: int, i: int, iova: int, span: int, pte: int, perm, path: tuple):
    r, w = perm
    nl = (pte >> 9) & 7
    rr, ww = r and bool(pte & PTE_IR), w and bool(pte & PTE_IW)
    if level == 1 or nl == 0:
        if not implausible_leaf(walk, level, i, iova, span, pte, pte & ADDR_MASK):
            walk.add_leaf(iova, pte & ADDR_MASK, span, rr, ww, level, path)
    elif nl == 7:
        size = _size_from_address(pte)
        if size < PAGE or size > span * 512:
            walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}): encoded page size {size:#x} out of range")
        elif iova % size == 0:   # the page is replicated over size/span entries: take the first
            walk.add_leaf(iova, pte & ADDR_MASK & ~(size - 1), size, rr, ww, level, path)
    elif nl >= level:
        walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}) points to level {nl}: not below; "
                           "not followed")
    else:
        # next level nl < level - 1 skips levels: their index bits are zero
        return pte & ADDR_MASK, nl, iova, (rr, ww), path
    return None


def _plain(level: int) -> tuple[int, int] | None:
    """A present entry of a level-1 table is a 4 KiB page; above, next-level 0 is a page
    of the level's size (next-level 7, a page of the size its address encodes, goes
    through _entry)."""
    return (0, 0) if level == 1 else (7 << 9, 0)


def _perm(pte: int, perm) -> tuple[bool, bool]:
    return perm[0] and bool(pte & PTE_IR), perm[1] and bool(pte & PTE_IW)


FORMAT = TableFormat(PTE_PR, ADDR_MASK, _plain, _perm, _entry)


def walk_v1(prog: drgn.Program, root: int, mode: int, read: bool = True, write: bool = True,
            max_tables: int = MAX_TABLES) -> TableWalk:
    """Walk a v1 page table; leaves in ascending IOVA order with the effective permission
    (the AND of every level's IR/IW and the device table entry's).

    :param mode: the device table entry's paging mode (number of levels, 1..6)
    :param read, write: the device table entry's IR/IW
    """
    if not 1 <= mode <= 6:
        return new_walk(root, mode, FORMAT, f"unsupported paging mode {mode}")
    return walk_tables(prog, root, mode, FORMAT, (read, write), max_tables)
