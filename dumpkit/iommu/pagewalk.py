"""The part of every IOMMU page-table walk that is the same for all vendors: table pages
read whole (one read per page, its 512 entries viewed as integers in place), and guards
so that a corrupt table (a loop, a pointer outside the dump, too many tables) ends in an
error, never a hang. The vendor says what each present entry means."""

from __future__ import annotations

from collections.abc import Callable

import sys

import drgn

from dumpkit.iommu.model import PageTableWalk
from dumpkit.units import iec

__all__ = ["walk_tables", "implausible_leaf", "MAX_TABLES", "PAGE"]

PAGE = 4096
MAX_TABLES = 1 << 18     # 1 GiB of table pages: far beyond any real domain

# (walk, level, index, iova, span, pte, context, path) -> None, or the next table to visit
# as (table address, its level, its base IOVA, context, path)
EntryFn = Callable[[PageTableWalk, int, int, int, int, int, object, tuple], tuple | None]


def _entries(page: bytes):
    """A table page's 512 little-endian 64-bit entries (a view, no copy on little-endian
    hosts; numpy would cost its 0.1 s import on every run for no gain at 512 entries)."""
    if sys.byteorder == "little":
        return memoryview(page).cast("Q")
    return [int.from_bytes(page[i:i + 8], "little") for i in range(0, PAGE, 8)]


def implausible_leaf(walk: PageTableWalk, level: int, i: int, iova: int, span: int, pte: int, addr: int) -> bool:
    """A large-page entry whose address is not aligned to its size has reserved bits set:
    the hardware would fault on it, and a flipped page-size bit in a table pointer looks
    exactly so (a 4 KiB-aligned table address read as a 1 GiB page). Such an entry is an
    error of the walk, never a mapping."""
    if span <= PAGE or not addr & (span - 1):
        return False
    walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}) {pte:#x}: a {iec(span)} page at {addr:#x}, "
                       "not aligned to its size (reserved bits set): the entry is damaged, not counted")
    return True


def walk_tables(prog: drgn.Program, root: int, levels: int, present_mask: int, entry: EntryFn,
                context=None, max_tables: int = MAX_TABLES) -> PageTableWalk:
    """Walk a radix page table of 512-entry pages from ``root`` (``levels`` deep), calling
    ``entry`` for each present entry in ascending IOVA order."""
    walk = PageTableWalk(root, levels)
    seen: set[int] = set()

    def visit(table: int, level: int, base: int, ctx, path: tuple) -> None:
        if table in seen:
            walk.errors.append(f"level {level} table {table:#x} (IOVA {base:#x}) is referenced twice: a loop "
                               "or a corrupt pointer; not followed again")
            return
        if len(seen) >= max_tables:
            walk.errors.append(f"more than {max_tables} table pages: walk stopped at IOVA {base:#x}")
            return
        seen.add(table)
        try:
            words = _entries(prog.read(table, PAGE, True))
        except drgn.FaultError as e:
            walk.errors.append(f"level {level} table {table:#x} (IOVA {base:#x}) is unreadable in the dump: {e}")
            return
        walk.tables_read += 1
        walk.entries_decoded += 512
        span = 1 << (12 + 9 * (level - 1))
        for i, pte in enumerate(words):
            if pte & present_mask:
                nxt = entry(walk, level, i, base + i * span, span, pte, ctx, path + (pte,))
                if nxt is not None:
                    visit(*nxt)

    visit(root & ~(PAGE - 1), levels, 0, context, ())
    return walk
