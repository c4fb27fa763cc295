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
from itertools import compress, islice, repeat
from operator import add, and_, eq, lt, mul, ne, sub
from dataclasses import dataclass, field, fields
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
    :param perm: ``(pte, context) -> (read, write)`` of a plain leaf, from the entry's
        non-address bits and the context only
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

    def add_iovas(self, iovas: list[int]) -> None:
        """Ascending; past 64 bits (entries beyond the top of a 6-level table) the column
        becomes a list."""
        if isinstance(self.iova, list):
            self.iova.extend(iovas)
        elif iovas[-1] >> 64:
            self.iova = [*self.iova, *iovas]
        else:
            self.iova.fromlist(iovas)

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
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
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
        runs.add_iovas([iova])
        runs.pte.append(path[-1] if path else 0)
        runs.count.append(1)
        runs.meta.append(len(runs.metas) - 1)
        runs._total += 1

    def summarise(self) -> tuple[list[MappingRange], dict]:
        """What :func:`dumpkit.iommu.model.summarise` gives for :attr:`leaves`, from the
        runs: (ranges, {"ranges", "bytes", "writable_bytes", "pages", "superpages"})."""
        runs = self.runs
        cols = zip(runs.iova, runs.pte, runs.count, runs.meta, strict=True)
        if not _ascending(runs.iova):
            cols = sorted(cols, key=lambda c: c[0])
        metas, addr_mask, perm = runs.metas, runs.addr_mask, runs.perm
        if len(metas) == 1 and metas[0][3] is None and len(runs):
            got = _summarise_one_kind(runs, metas[0])
            if got is not None:
                return got
        ranges: list[MappingRange] = []
        add = ranges.append
        pages = superpages = total = writable = 0
        c_iova = c_phys = c_size = -1
        c_r = c_w = c_big = None
        last_mi, size, ctx, explicit, last_flags = -1, 0, None, None, -1
        flag_mask = ~addr_mask & ((1 << 64) - 1)
        for iova, pte, count, mi in cols:
            if mi != last_mi:
                _level, size, ctx, explicit = metas[mi]
                last_mi, last_flags = mi, -1
            if explicit:
                phys, r, w = explicit[0], explicit[1], explicit[2]
                last_flags = -1
            else:
                phys = pte & addr_mask
                if pte & flag_mask != last_flags:      # the permission is the flags' (and the table's)
                    r, w = perm(pte, ctx)
                    last_flags = pte & flag_mask
            pages += count
            big = size > PAGE
            if big:
                superpages += count
            n = count * size
            if c_iova + c_size == iova and c_phys + c_size == phys and c_r == r and c_w == w:
                c_size += n
                c_big = c_big or big
                continue
            if c_iova >= 0:
                add(_range(c_iova, c_phys, c_size, c_r, c_w, c_big))
                total += c_size
                writable += c_size if c_w else 0
            c_iova, c_phys, c_size, c_r, c_w, c_big = iova, phys, n, r, w, big
        if c_iova >= 0:
            add(_range(c_iova, c_phys, c_size, c_r, c_w, c_big))
            total += c_size
            writable += c_size if c_w else 0
        return ranges, {"ranges": len(ranges), "bytes": total, "writable_bytes": writable,
                        "pages": pages, "superpages": superpages}

    def leaf_at(self, iova: int) -> Leaf | None:
        """The leaf mapping ``iova`` (with its path from the top-level entry down), or None."""
        hit = self.runs.find(iova)
        return None if hit is None else self.runs.leaf(*hit)

    def lookup(self, iova: int) -> tuple[int, bool, bool] | None:
        """(physical address, readable, writable) of ``iova``, or None if not mapped."""
        leaf = self.leaf_at(iova)
        return None if leaf is None else (leaf.phys + (iova - leaf.iova), leaf.read, leaf.write)


def _fast_range(iova: int, phys: int, size: int, read: bool, write: bool, superpage: bool) -> MappingRange:
    """MappingRange(...) without the frozen dataclass's per-field object.__setattr__
    (a third of the cost; most of summarising a domain of many ranges)."""
    r = _new(MappingRange)
    d = r.__dict__
    d["iova"] = iova
    d["phys"] = phys
    d["size"] = size
    d["read"] = read
    d["write"] = write
    d["superpage"] = superpage
    return r


_new = object.__new__
_range = _fast_range if (not hasattr(MappingRange, "__slots__") and not hasattr(MappingRange, "__post_init__")
                         and [f.name for f in fields(MappingRange)]
                         == ["iova", "phys", "size", "read", "write", "superpage"]) else MappingRange


def _summarise_one_kind(runs: LeafRuns, meta: tuple) -> tuple[list[MappingRange], dict] | None:
    """:meth:`TableWalk.summarise` where every run is of one level and context (a domain
    of 4 KiB pages), in passes at C speed; None when two runs make one range (the loop
    then merges them)."""
    _level, size, ctx, _ = meta
    addr_mask, perm = runs.addr_mask, runs.perm
    iova, pte, count = runs.iova, runs.pte, runs.count
    if not _ascending(iova):
        return None
    flag_mask = ~addr_mask & ((1 << 64) - 1)
    flags = list(map(and_, pte, repeat(flag_mask)))
    rw = {f: perm(f, ctx) for f in set(flags)}
    rws = list(map(rw.__getitem__, flags))
    phys = list(map(and_, pte, repeat(addr_mask)))
    nbytes = list(map(mul, count, repeat(size)))
    if any(map(and_, map(and_, map(eq, map(add, iova, nbytes), islice(iova, 1, None)),
                                   map(eq, map(add, phys, nbytes), islice(phys, 1, None))),
                      map(eq, rws, islice(rws, 1, None)))):
        return None
    big = size > PAGE
    reads = [x[0] for x in rws]
    writes = [x[1] for x in rws]
    ranges = list(map(_range, iova, phys, nbytes, reads, writes, repeat(big)))
    pages = sum(count)
    total = sum(nbytes)
    return ranges, {"ranges": len(ranges), "bytes": total, "writable_bytes": sum(compress(nbytes, writes)),
                    "pages": pages, "superpages": pages if big else 0}


def _ascending(a) -> bool:
    return all(map(lt, a, islice(a, 1, None)))


def new_walk(root: int, levels: int, fmt: TableFormat, error: str | None = None) -> TableWalk:
    """A walk with no leaves yet (and, with ``error``, one that cannot start)."""
    runs = LeafRuns(fmt.addr_mask, fmt.perm)
    walk = TableWalk(root, levels, runs=runs)
    walk.leaves = LeafView(runs)
    if error:
        walk.errors.append(error)
    return walk


def _xor_runs(page: bytes, mv: memoryview, i: int, e: int, span: int, present: int, addr_mask: int, limit: int):
    """Runs of entries i..e of a last-level page found with a few operations on the whole
    page read as one integer, instead of a Python step per entry or per run: adding the
    page size to every entry at once and comparing the result with the page shifted by one
    entry leaves a non-zero word exactly where an entry does not continue its predecessor
    (is not it plus the page size); those are the runs' starts, and every run whose first
    entry is present is one (its entries then have its flags). (starts, ptes, counts), or
    None when an addition carried out of an entry (one with all its top bits set: damage)
    or a run would start too near the top of the address space: the per-entry loop then
    gives those entries to the vendor."""
    x = int.from_bytes(page, "little")
    plus = x + span * _REP
    if (plus ^ x) & _REP:                       # bit 0 of an entry changed: a carry came into it
        return None
    n = e - 1 - i
    starts = [i]
    if n > 0:
        diff = array("Q")
        diff.frombytes(((((x >> 64) ^ plus) >> (64 * i)) & ((1 << (64 * n)) - 1)).to_bytes(8 * n, "little"))
        starts += compress(range(i + 1, e), diff)
    heads = list(map(mv.__getitem__, starts))
    live = list(map(and_, heads, repeat(present)))
    ptes = list(compress(heads, live))
    if ptes and max(map(and_, ptes, repeat(addr_mask))) > limit:
        return None
    counts = list(compress(map(sub, [*starts[1:], e], starts), live))
    return list(compress(starts, live)), ptes, counts


def _leaf_runs(page: bytes, a: int, e: int, span: int, present: int, addr_mask: int, limit: int):
    """The runs of a last-level page (every present entry a plain leaf) between its first
    and last used entries a..e: (starts, ptes, counts), or None when the per-entry loop
    must decode it. Each run's end is found by galloping and bisecting on single entries
    (entry i+m-1 == entry i + (m-1) * span), then the whole run is checked with one
    comparison of its bytes, read as an integer, with the progression; where that fails
    (an entry in between left the progression) or the runs are short (a fragmented
    mapping: a few runs cover less than a quarter of the page each), the rest of the page
    goes through :func:`_xor_runs`, whose cost does not grow with the number of runs."""
    mv = memoryview(page).cast("Q")
    starts: list[int] = []
    ptes: list[int] = []
    counts: list[int] = []
    i = a
    while i < e:
        w = mv[i]
        if not w & present:
            if w:
                i += 1
            else:                                           # skip empty entries at C speed
                i = e - len(page[8 * i:8 * e].lstrip(b"\0")) // 8
            continue
        if w & addr_mask > limit:
            return None
        n = e - i
        if mv[e - 1] == w + (n - 1) * span:
            m = n
        else:                                               # the longest m whose last entry fits
            lo = 1
            while 2 * lo <= n and mv[i + 2 * lo - 1] == w + (2 * lo - 1) * span:
                lo *= 2
            hi = min(2 * lo, n)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mv[i + mid - 1] == w + (mid - 1) * span:
                    lo = mid
                else:
                    hi = mid
            m = lo
        if m > 2:
            ones, ramp = _progression(m, span)
            if int.from_bytes(page[8 * i:8 * (i + m)], "little") != w * ones + ramp:
                m = 0
        if not m or (starts and m < 128):
            rest = _xor_runs(page, mv, i, e, span, present, addr_mask, limit)
            if rest is None:
                return None
            return starts + rest[0], ptes + rest[1], counts + rest[2]
        starts.append(i)
        ptes.append(w)
        counts.append(m)
        i += m
    return starts, ptes, counts


def walk_tables(prog: drgn.Program, root: int, levels: int, fmt: TableFormat, context=None,
                max_tables: int = MAX_TABLES) -> TableWalk:
    """Walk a radix page table of 512-entry pages from ``root`` (``levels`` deep): plain
    leaves decoded a page at a time, every other present entry given to ``fmt.entry`` in
    ascending IOVA order."""
    walk = new_walk(root, levels, fmt)
    runs = walk.runs
    seen: set[int] = set()
    present, addr_mask, entry = fmt.present, fmt.addr_mask, fmt.entry
    metas = runs.metas
    meta_of: dict = {}                 # (level, context) -> index in metas: one per kind, not per page
    params: dict[int, tuple] = {}      # level -> (span, plain, pmask, pvalue, amask, limit, leaf_only)

    def level_params(level: int) -> tuple:
        span = 1 << (12 + 9 * (level - 1))
        plain = fmt.plain(level) if span * 512 <= addr_mask + 1 else None
        if plain is None:
            got = (span, None, 0, 1, 0, -1, False)               # no entry is a plain leaf
        else:
            amask = (span - 1) & addr_mask                       # a large page's address is aligned
            limit = addr_mask + 1 - 512 * span                   # a run never carries out of the address
            got = (span, plain, plain[0], plain[1], amask, limit, not plain[0] and not amask and _LITTLE)
        params[level] = got
        return got

    def emit(level: int, span: int, ctx, base: int, starts: list[int], ptes: list[int], counts: list[int]) -> None:
        """A page's runs (starts: entry indexes); the first may continue the walk's last run
        (same level and context, the next IOVA, the next entry of its progression)."""
        key = (level, ctx)
        meta = meta_of.get(key)
        if meta is None:
            metas.append((level, span, ctx, None))
            meta = meta_of[key] = len(metas) - 1
        r_iova, r_pte, r_count = runs.iova, runs.pte, runs.count
        if r_iova and runs.meta[-1] == meta:
            n, p0, w = r_count[-1], r_pte[-1], ptes[0]
            if (r_iova[-1] + n * span == base + starts[0] * span and p0 + n * span == w
                    and w & addr_mask > p0 & addr_mask):
                r_count[-1] = n + counts[0]
                runs._total += counts[0]
                if len(starts) == 1:
                    return
                starts, ptes, counts = starts[1:], ptes[1:], counts[1:]
        if len(starts) == 1:
            runs.add_iovas([base + starts[0] * span])
            r_pte.append(ptes[0])
            r_count.append(counts[0])
            runs.meta.append(meta)
            runs._total += counts[0]
            return
        runs.add_iovas([base + i * span for i in starts])
        r_pte.fromlist(ptes)
        r_count.fromlist(counts)
        runs.meta.fromlist([meta] * len(starts))
        runs._total += sum(counts)

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
        span, plain, pmask, pvalue, amask, limit, leaf_only = params.get(level) or level_params(level)
        head = page.lstrip(b"\0")
        if not head:
            return
        a = (PAGE - len(head)) // 8
        e = (len(page.rstrip(b"\0")) + 7) // 8
        if leaf_only:
            # a last-level table: runs found in a few steps each, checked a run at a time
            got = _leaf_runs(page, a, e, span, present, addr_mask, limit)
            if got is not None:
                if got[0]:
                    emit(level, span, ctx, base, *got)
                return
        else:
            # one progression of plain leaves between empty entries: one comparison
            w0 = int.from_bytes(page[8 * a:8 * a + 8], "little")
            if (plain is not None and w0 & present and w0 & pmask == pvalue and not w0 & amask
                    and w0 & addr_mask <= limit):
                ones, ramp = _progression(e - a, span)
                if int.from_bytes(page[8 * a:8 * e], "little") == w0 * ones + ramp:
                    emit(level, span, ctx, base, [a], [w0], [e - a])
                    return
        words = memoryview(page).cast("Q").tolist() if _LITTLE else \
            [int.from_bytes(page[i:i + 8], "little") for i in range(0, PAGE, 8)]

        # entry by entry: runs grow while entries continue them
        starts: list[int] = []
        ptes: list[int] = []
        counts: list[int] = []
        expect, start, ws = -1, -1, 0
        for i in range(a, e):
            w = words[i]
            if w == expect:
                expect += span
                continue
            if start >= 0:
                starts.append(start)
                ptes.append(ws)
                counts.append(i - start)
                start = expect = -1
            if not w & present:
                continue
            if w & pmask == pvalue and not w & amask and w & addr_mask <= limit:
                start, ws, expect = i, w, w + span
                continue
            if starts:                          # the runs before it first: ascending IOVA
                emit(level, span, ctx, base, starts, ptes, counts)
                starts, ptes, counts = [], [], []
            nxt = entry(walk, level, i, base + i * span, span, w, ctx, path + (w,))
            if nxt is not None:
                visit(*nxt)
        if start >= 0:
            starts.append(start)
            ptes.append(ws)
            counts.append(e - start)
        if starts:
            emit(level, span, ctx, base, starts, ptes, counts)

    visit(root & ~(PAGE - 1), levels, 0, context, ())
    return walk
