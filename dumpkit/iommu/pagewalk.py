"""The part of every IOMMU page-table walk that is the same for all vendors: table pages
read whole (one read per page), decoded a page at a time into runs of leaves, and guards
so that a corrupt table (a loop, a pointer outside the dump, too many tables) ends in an
error, never a hang. The vendor says what each entry means (:class:`TableFormat`).

A walk keeps no object per page-table entry. A *run* is a stretch of leaves at
consecutive IOVAs whose entries are an arithmetic progression (the same flags, the
physical address advancing by the page size): a table page mapping 2 MiB of contiguous
memory in 4 KiB pages is one run, and a run continues into the next table page when that
page carries on where the previous ended. Runs are kept in columns (``array('Q')``);
:attr:`TableWalk.leaves` is a read-only sequence of :class:`~dumpkit.iommu.model.Leaf`
records made from them on demand (with each leaf's path, from the per-table-page paths
the walk keeps), :meth:`TableWalk.summarise` gives the coalesced mapping ranges without
making them, and :meth:`TableWalk.lookup` / :meth:`TableWalk.leaf_at` translate one IOVA.

How a page is decoded: after leading and trailing empty entries are cut, a page whose
entries are one progression of plain leaves is recognised by one comparison of the page,
read as a single integer, with the progression computed from its first entry (the common
case for DMA and VFIO mappings); any other page is decoded entry by entry, growing runs
while entries continue them, and handing the entries that are not plain leaves (table
pointers, special or damaged entries) to the vendor one at a time."""

from __future__ import annotations

import bisect
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import drgn

from dumpkit.iommu.model import Leaf, MappingRange, PageTableWalk
from dumpkit.units import iec

__all__ = ["walk_tables", "new_walk", "implausible_leaf", "TableFormat", "TableWalk", "LeafRuns", "MAX_TABLES", "PAGE"]

PAGE = 4096
MAX_TABLES = 1 << 18     # 1 GiB of table pages: far beyond any real domain
_LITTLE = sys.byteorder == "little"

# (walk, level, index, iova, span, pte, context, path) -> None, or the next table to visit
# as (table address, its level, its base IOVA, context, path); leaves through walk.add_leaf
EntryFn = Callable[["TableWalk", int, int, int, int, int, object, tuple], tuple | None]


@dataclass(frozen=True)
class TableFormat:
    """What a vendor's entries mean, as the page decoder needs it.

    :param present: an entry with none of these bits set is empty
    :param addr_mask: the output-address bits of an entry
    :param plain: for a level, ``(mask, value)``: a present entry with ``pte & mask == value``
        whose address is aligned to the level's page size is a plain leaf (that page, at the
        entry's address, with :attr:`perm`); None: the level has no plain leaves
    :param perm: ``(pte, context) -> (read, write)`` of a plain leaf
    :param entry: every other present entry (tables, special pages, damage), one at a time
    """

    present: int
    addr_mask: int
    plain: Callable[[int], tuple[int, int] | None]
    perm: Callable[[int, object], tuple[bool, bool]]
    entry: EntryFn


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


# --- one table page as a single integer ---------------------------------------------------

_ONES = (1 << (64 * 512)) - 1
_REP = _ONES // ((1 << 64) - 1)                               # word k = 1
_RAMP = sum(k << (64 * k) for k in range(512))                # word k = k


@lru_cache(maxsize=64)
def _progression(n: int, span: int) -> tuple[int, int]:
    """(ones, ramp * span) over the first n words: a progression of n entries starting
    at w0 with step span is the integer ``w0 * ones + ramp``."""
    mask = (1 << (64 * n)) - 1
    return _REP & mask, (_RAMP & mask) * span


class LeafRuns:
    """Leaves as runs, in ascending IOVA order, in columns: run j maps ``count[j]`` pages of
    ``size`` bytes from ``iova[j]``, the k-th leaf's entry being ``pte[j] + k * size``;
    ``meta[j]`` indexes ``metas``: (level, size, context, explicit), explicit being None
    for a run of plain leaves or (phys, read, write, path) for one leaf the vendor made."""

    __slots__ = ("iova", "pte", "count", "meta", "metas", "addr_mask", "perm", "tables", "_cum", "_total")

    def __init__(self, addr_mask: int, perm: Callable[[int, object], tuple[bool, bool]]):
        self.iova, self.pte, self.count, self.meta = array("Q"), array("Q"), array("Q"), array("L")
        self.metas: list[tuple] = []
        self.addr_mask, self.perm = addr_mask, perm
        # per level: (base IOVAs of its table pages, ascending; their paths) for leaf paths
        self.tables: dict[int, tuple[list[int], list[tuple]]] = {}
        self._cum: array | None = None
        self._total = 0

    def __len__(self) -> int:
        return len(self.iova)

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__ if k != "_cum"}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self._cum = None

    def add_iova(self, iova: int) -> None:
        try:
            self.iova.append(iova)
        except OverflowError:     # beyond 64 bits (entries past the top of a 6-level table)
            self.iova = list(self.iova)
            self.iova.append(iova)

    def rw(self, j: int) -> tuple[bool, bool]:
        level, size, ctx, explicit = self.metas[self.meta[j]]
        return (explicit[1], explicit[2]) if explicit else self.perm(self.pte[j], ctx)

    def phys(self, j: int) -> int:
        explicit = self.metas[self.meta[j]][3]
        return explicit[0] if explicit else self.pte[j] & self.addr_mask

    def size(self, j: int) -> int:
        return self.metas[self.meta[j]][1]

    def leaf(self, j: int, k: int) -> Leaf:
        """The k-th leaf of run j, with its path."""
        level, size, ctx, explicit = self.metas[self.meta[j]]
        iova = self.iova[j] + k * size
        if explicit:
            return Leaf(iova, explicit[0], size, explicit[1], explicit[2], level, explicit[3])
        pte = self.pte[j] + k * size
        r, w = self.perm(pte, ctx)
        bases, paths = self.tables[level]
        return Leaf(iova, pte & self.addr_mask, size, r, w, level, paths[bisect.bisect_right(bases, iova) - 1] + (pte,))

    def cumulative(self) -> array:
        """Leaves before each run (and the total at the end)."""
        if self._cum is None or len(self._cum) != len(self.count) + 1:
            cum, total = array("Q", [0]), 0
            for c in self.count:
                total += c
                cum.append(total)
            self._cum = cum
        return self._cum

    def find(self, iova: int) -> tuple[int, int] | None:
        """(run, leaf within it) of the leaf mapping ``iova``, or None."""
        j = bisect.bisect_right(self.iova, iova) - 1
        if j < 0:
            return None
        size = self.size(j)
        k = (iova - self.iova[j]) // size
        return (j, k) if k < self.count[j] else None


class LeafView(Sequence):
    """The leaves of a walk as a read-only sequence of :class:`Leaf` (made on demand; no
    object per entry is kept). Iteration, ``len``, indexing, slicing and ``bisect`` work
    as on the list walks used to return."""

    __slots__ = ("_runs",)

    def __init__(self, runs: LeafRuns):
        self._runs = runs

    def __len__(self) -> int:
        return self._runs._total

    def __iter__(self):
        runs = self._runs
        for j in range(len(runs)):
            for k in range(runs.count[j]):
                yield runs.leaf(j, k)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[x] for x in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("leaf index out of range")
        cum = self._runs.cumulative()
        j = bisect.bisect_right(cum, i) - 1
        return self._runs.leaf(j, i - cum[j])

    def __eq__(self, other):
        if isinstance(other, LeafView | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"<{len(self)} leaves in {len(self._runs)} runs>"

    def __deepcopy__(self, memo):   # immutable: dataclasses.asdict keeps it as it is
        return self

    def __copy__(self):
        return self


@dataclass
class TableWalk(PageTableWalk):
    """Result of walking one page-table root: :class:`PageTableWalk` whose ``leaves`` is a
    :class:`LeafView` over ``runs``."""

    runs: LeafRuns | None = field(default=None, repr=False)

    def add_leaf(self, iova: int, phys: int, size: int, read: bool, write: bool, level: int, path: tuple) -> None:
        """A leaf the vendor decoded itself (one that is not a plain entry of its level)."""
        runs = self.runs
        runs.metas.append((level, size, None, (phys, read, write, path)))
        runs.add_iova(iova)
        runs.pte.append(path[-1] if path else 0)
        runs.count.append(1)
        runs.meta.append(len(runs.metas) - 1)
        runs._total += 1

    def summarise(self) -> tuple[list[MappingRange], dict]:
        """What :func:`dumpkit.iommu.model.summarise` gives for :attr:`leaves`, from the
        runs: (ranges, {"ranges", "bytes", "writable_bytes", "pages", "superpages"})."""
        runs = self.runs
        ranges: list[MappingRange] = []
        cur = None
        pages = superpages = 0
        order = sorted(range(len(runs)), key=runs.iova.__getitem__) if not _ascending(runs.iova) else range(len(runs))
        for j in order:
            iova, count, size = runs.iova[j], runs.count[j], runs.size(j)
            phys = runs.phys(j)
            r, w = runs.rw(j)
            pages += count
            if size > PAGE:
                superpages += count
            if cur and cur[0] + cur[2] == iova and cur[1] + cur[2] == phys and cur[3] == r and cur[4] == w:
                cur[2] += count * size
                cur[5] = cur[5] or size > PAGE
                continue
            if cur:
                ranges.append(MappingRange(*cur))
            cur = [iova, phys, count * size, r, w, size > PAGE]
        if cur:
            ranges.append(MappingRange(*cur))
        return ranges, {"ranges": len(ranges), "bytes": sum(x.size for x in ranges),
                        "writable_bytes": sum(x.size for x in ranges if x.write),
                        "pages": pages, "superpages": superpages}

    def leaf_at(self, iova: int) -> Leaf | None:
        """The leaf mapping ``iova`` (with its path from the top-level entry down), or None."""
        hit = self.runs.find(iova)
        return None if hit is None else self.runs.leaf(*hit)

    def lookup(self, iova: int) -> tuple[int, bool, bool] | None:
        """(physical address, readable, writable) of ``iova``, or None if not mapped."""
        leaf = self.leaf_at(iova)
        return None if leaf is None else (leaf.phys + (iova - leaf.iova), leaf.read, leaf.write)


def _ascending(a: array) -> bool:
    return all(x < y for x, y in zip(a, a[1:]))


def new_walk(root: int, levels: int, fmt: TableFormat, error: str | None = None) -> TableWalk:
    """A walk with no leaves yet (and, with ``error``, one that cannot start)."""
    runs = LeafRuns(fmt.addr_mask, fmt.perm)
    walk = TableWalk(root, levels, runs=runs)
    walk.leaves = LeafView(runs)
    if error:
        walk.errors.append(error)
    return walk


def walk_tables(prog: drgn.Program, root: int, levels: int, fmt: TableFormat, context=None,
                max_tables: int = MAX_TABLES) -> TableWalk:
    """Walk a radix page table of 512-entry pages from ``root`` (``levels`` deep): plain
    leaves decoded a page at a time, every other present entry given to ``fmt.entry`` in
    ascending IOVA order."""
    walk = new_walk(root, levels, fmt)
    runs = walk.runs
    seen: set[int] = set()
    present, addr_mask, entry = fmt.present, fmt.addr_mask, fmt.entry
    r_pte, r_count, r_meta, metas = runs.pte, runs.count, runs.meta, runs.metas
    perm = fmt.perm

    def emit(iova: int, pte: int, count: int, meta: int, first: bool) -> None:
        """A run; the first of a page may continue the walk's last run."""
        r_iova = runs.iova
        if first and r_iova:
            level, size, ctx, _ = metas[meta]
            j = len(r_iova) - 1
            m = metas[r_meta[j]]
            n = r_count[j]
            if (m[3] is None and m[0] == level and m[1] == size and r_iova[j] + n * size == iova
                    and r_pte[j] + n * size == pte and perm(r_pte[j], m[2]) == perm(pte, ctx)):
                r_count[j] = n + count
                runs._total += count
                return
        runs.add_iova(iova)
        r_pte.append(pte)
        r_count.append(count)
        r_meta.append(meta)
        runs._total += count

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
            page = prog.read(table, PAGE, True)
        except drgn.FaultError as e:
            walk.errors.append(f"level {level} table {table:#x} (IOVA {base:#x}) is unreadable in the dump: {e}")
            return
        walk.tables_read += 1
        walk.entries_decoded += 512
        bases, paths = runs.tables.setdefault(level, ([], []))
        bases.append(base)
        paths.append(path)
        span = 1 << (12 + 9 * (level - 1))
        plain = fmt.plain(level) if span * 512 <= addr_mask + 1 else None
        if plain is None:
            pmask, pvalue, amask, limit = 0, 1, 0, -1            # no entry is a plain leaf
        else:
            pmask, pvalue = plain
            amask = (span - 1) & addr_mask                       # a large page's address is aligned
            limit = addr_mask + 1 - 512 * span                   # a run never carries out of the address
        meta = -1

        # one progression of plain leaves between empty entries: one comparison
        head = page.lstrip(b"\0")
        if not head:
            return
        a = (PAGE - len(head)) // 8
        e = (len(page.rstrip(b"\0")) + 7) // 8
        w0 = int.from_bytes(page[8 * a:8 * a + 8], "little")
        if (plain is not None and w0 & present and w0 & pmask == pvalue and not w0 & amask
                and w0 & addr_mask <= limit):
            ones, ramp = _progression(e - a, span)
            if int.from_bytes(page[8 * a:8 * e], "little") == w0 * ones + ramp:
                metas.append((level, span, ctx, None))
                emit(base + a * span, w0, e - a, len(metas) - 1, True)
                return

        words = memoryview(page).cast("Q").tolist() if _LITTLE else \
            [int.from_bytes(page[i:i + 8], "little") for i in range(0, PAGE, 8)]
        expect, start, ws, first = -1, -1, 0, True
        for i in range(a, e):
            w = words[i]
            if w == expect:
                expect += span
                continue
            if start >= 0:
                if meta < 0:
                    metas.append((level, span, ctx, None))
                    meta = len(metas) - 1
                emit(base + start * span, ws, i - start, meta, first)
                start, expect, first = -1, -1, False
            if not w & present:
                continue
            if w & pmask == pvalue and not w & amask and w & addr_mask <= limit:
                start, ws, expect = i, w, w + span
                continue
            nxt = entry(walk, level, i, base + i * span, span, w, ctx, path + (w,))
            first = False
            if nxt is not None:
                visit(*nxt)
        if start >= 0:
            if meta < 0:
                metas.append((level, span, ctx, None))
                meta = len(metas) - 1
            emit(base + start * span, ws, e - start, meta, first)

    visit(root & ~(PAGE - 1), levels, 0, context, ())
    return walk
