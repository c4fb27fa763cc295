"""The page-table walk decodes pages into runs of leaves; what it returns is exactly what
the walk that made one record per entry returned (kept below as the reference, as it
was before the runs): the same leaves with their paths, errors, counts and ranges, on
random VT-d and AMD-Vi tables built in memory (progressions that cross table pages,
scattered pages, large and damaged pages, loops, unreadable tables, addresses at the top
of the address space), and on every sample dump. A domain of 1 GiB in 4 KiB pages is
one run, however many table pages hold it."""

from __future__ import annotations

import random
import struct
import sys

import drgn
import pytest

from dumpkit.iommu.amd import pagetable as amd
from dumpkit.iommu.model import Leaf, PageTableWalk, lookup, summarise
from dumpkit.iommu.pagewalk import PAGE, implausible_leaf
from dumpkit.iommu.vtd import pagetable as vtd

# --- the reference: one record per entry, 64-bit words unpacked one by one --------------


def reference_walk(prog, root, levels, present_mask, entry, context=None, max_tables=1 << 18) -> PageTableWalk:
    walk = PageTableWalk(root, levels)
    seen: set[int] = set()

    def visit(table, level, base, ctx, path):
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
        span = 1 << (12 + 9 * (level - 1))
        for i, pte in enumerate(struct.unpack("<512Q", page)):
            if pte & present_mask:
                nxt = entry(walk, level, i, base + i * span, span, pte, ctx, path + (pte,))
                if nxt is not None:
                    visit(*nxt)

    visit(root & ~(PAGE - 1), levels, 0, context, ())
    return walk


def ref_vtd_entry(walk, level, i, iova, span, pte, _ctx, path):
    addr = pte & vtd.PTE_ADDR_MASK
    large = level > 1 and pte & vtd.PTE_LARGE
    if large and level > 3:
        walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}) {pte:#x}: a page-size bit where the format "
                           "has none; the entry is damaged, not counted")
        return None
    if level == 1 or large:
        if not implausible_leaf(walk, level, i, iova, span, pte, addr):
            walk.leaves.append(Leaf(iova, addr, span, bool(pte & 1), bool(pte & 2), level, path))
        return None
    return addr, level - 1, iova, None, path


def ref_amd_entry(walk, level, i, iova, span, pte, perm, path):
    r, w = perm
    nl = (pte >> 9) & 7
    rr, ww = r and bool(pte & amd.PTE_IR), w and bool(pte & amd.PTE_IW)
    if level == 1 or nl == 0:
        if not implausible_leaf(walk, level, i, iova, span, pte, pte & amd.ADDR_MASK):
            walk.leaves.append(Leaf(iova, pte & amd.ADDR_MASK, span, rr, ww, level, path))
    elif nl == 7:
        size = amd._size_from_address(pte)
        if size < PAGE or size > span * 512:
            walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}): encoded page size {size:#x} out of range")
        elif iova % size == 0:
            walk.leaves.append(Leaf(iova, pte & amd.ADDR_MASK & ~(size - 1), size, rr, ww, level, path))
    elif nl >= level:
        walk.errors.append(f"level {level} entry {i} (IOVA {iova:#x}) points to level {nl}: not below; "
                           "not followed")
    else:
        return pte & amd.ADDR_MASK, nl, iova, (rr, ww), path
    return None


# --- tables in memory -------------------------------------------------------------------


class Memory:
    """Physical pages of a made-up machine, as a drgn program reads them."""

    def __init__(self):
        self.pages: dict[int, bytearray] = {}
        self.next = 0x100000

    def table(self) -> int:
        addr, self.next = self.next, self.next + PAGE
        self.pages[addr] = bytearray(PAGE)
        return addr

    def set(self, table: int, i: int, value: int) -> None:
        struct.pack_into("<Q", self.pages[table], i * 8, value)

    def program(self) -> drgn.Program:
        prog = drgn.Program(drgn.host_platform)
        for addr, page in self.pages.items():
            prog.add_memory_segment(addr, PAGE, lambda a, n, off, phys, p=page: bytes(p[off:off + n]), True)
        return prog


UNREADABLE = 0x7F_FFFF_F000


def random_tables(rng: random.Random, vendor: str, levels: int) -> tuple[Memory, int]:
    mem = Memory()
    root = mem.table()
    tables = [root]
    top = (1 << 52) - PAGE

    def fill(table: int, level: int, budget: list[int], carry=None):
        """Entries of one table; with ``carry`` (phys, flags) a full page continuing the
        previous sibling's progression. Returns where its progression ended."""
        span = 1 << (12 + 9 * (level - 1))
        style = rng.choice(["run", "scattered", "sparse", "mixed", "full-run", "top", "tables"])
        phys = rng.randrange(1, 1 << 20) * PAGE * (512 if level > 1 else 1)
        flags = _flags(rng, vendor, level)
        if carry is not None and (carry[1] >> 9) & 7 != 7:
            style, (phys, flags) = "full-run", carry
        i = rng.randrange(0, 8) if style != "full-run" else 0
        last = None
        while i < 512:
            if style == "sparse" and rng.random() < 0.9:
                i += rng.randrange(1, 64)
                continue
            kind = rng.random() * (0.3 if style == "tables" else 1)
            if level > 1 and kind < 0.25 and budget[0] > 0 and style in ("mixed", "sparse", "scattered", "tables"):
                budget[0] -= 1
                down = _down(rng, vendor, level)
                if rng.random() < 0.05:
                    target = rng.choice(tables)          # a loop or a shared table
                elif rng.random() < 0.05:
                    target = UNREADABLE                  # outside the dump
                else:
                    target = mem.table()
                    tables.append(target)
                    last = fill(target, down, budget, last if rng.random() < 0.6 else None)
                mem.set(table, i, _pointer(rng, vendor, target, down))
                i += 1
                continue
            if style == "top":
                phys = top - rng.randrange(0, 600) * PAGE
            elif style in ("scattered", "mixed") and rng.random() < 0.5:
                phys = rng.randrange(1, 1 << 24) * PAGE
            if level > 1 and rng.random() < 0.1:
                phys += PAGE                             # a misaligned large page: damage
            if rng.random() < 0.05:
                flags = _flags(rng, vendor, level)
            mem.set(table, i, _leaf(rng, vendor, level, phys, flags))
            phys += span
            i += 1
            if style in ("run", "full-run") and rng.random() < 0.01:
                i += 1                                   # a hole
        if style == "full-run" and rng.random() < 0.3:
            for j in range(rng.randrange(0, 512), 512):
                mem.set(table, j, 0)                     # a run that ends inside the page
        return phys, flags

    fill(root, levels, [rng.randrange(1, 40)])
    return mem, root


def _flags(rng, vendor, level):
    if vendor == "vtd":
        f = rng.choice([1, 2, 3, 3, 3]) | rng.choice([0, 0, 1 << 11, 1 << 62])
        return f | (vtd.PTE_LARGE if level > 1 else rng.choice([0, vtd.PTE_LARGE]))
    f = 1 | rng.choice([amd.PTE_IR | amd.PTE_IW, amd.PTE_IR, amd.PTE_IW, 0, amd.PTE_IR | amd.PTE_IW])
    return f | (rng.choice([0, 0, 0, 7]) << 9 if level > 1 else rng.choice([0, 1]) << 9)


def _leaf(rng, vendor, level, phys, flags):
    if vendor == "amd" and level > 1 and (flags >> 9) & 7 == 7:
        # next-level 7: the page size in the address, 2 << (lowest zero bit from 12)
        size = 1 << rng.randrange(13, 12 + 9 * level + 2)
        phys = (phys & ~(size - 1)) | ((size // 2 - 1) & ~0xFFF)
    return (phys & ((1 << 52) - 1) & ~0xFFF) | flags


def _down(rng, vendor, level):
    return level - 1 if vendor == "vtd" or rng.random() < 0.8 else rng.randrange(1, level)


def _pointer(rng, vendor, target, down):
    if vendor == "vtd":
        return target | rng.choice([3, 3, 1, 2]) | rng.choice([0, 0, 0, vtd.PTE_LARGE])
    bad = rng.random() < 0.05
    return target | 1 | (rng.choice([7, 6, 5]) if bad else down) << 9 | rng.choice(
        [amd.PTE_IR | amd.PTE_IW, amd.PTE_IR, amd.PTE_IW | amd.PTE_IR])


def _same(new, ref):
    assert list(new.leaves) == ref.leaves
    assert len(new.leaves) == len(ref.leaves)
    assert new.errors == ref.errors
    assert (new.tables_read, new.entries_decoded) == (ref.tables_read, ref.entries_decoded)
    assert new.summarise() == summarise(ref.leaves)
    probes = [x.iova + d for x in ref.leaves[:: max(1, len(ref.leaves) // 40)] for d in (0, 123, x.size - 1, x.size)]
    for iova in probes:
        assert new.lookup(iova) == lookup(ref.leaves, iova) == lookup(new.leaves, iova), hex(iova)
    for k in range(0, len(ref.leaves), max(1, len(ref.leaves) // 25)):
        assert new.leaves[k] == ref.leaves[k]
        assert new.leaf_at(ref.leaves[k].iova) == ref.leaves[k]


@pytest.mark.parametrize("seed", range(60))
def test_random_vtd_tables_walk_as_the_reference(seed):
    rng = random.Random(seed)
    levels = rng.choice([3, 3, 4, 5])
    mem, root = random_tables(rng, "vtd", levels)
    prog = mem.program()
    _same(vtd.walk_page_table(prog, root, levels),
          reference_walk(prog, root, levels, 3, ref_vtd_entry))


@pytest.mark.parametrize("seed", range(60))
def test_random_amd_tables_walk_as_the_reference(seed):
    rng = random.Random(1000 + seed)
    mode = rng.choice([2, 3, 3, 4, 5, 6])
    r, w = rng.choice([(True, True), (True, False), (False, True)])
    mem, root = random_tables(rng, "amd", mode)
    prog = mem.program()
    _same(amd.walk_v1(prog, root, mode, r, w),
          reference_walk(prog, root, mode, amd.PTE_PR, ref_amd_entry, (r, w)))


def test_table_limit_stops_the_walk_as_before():
    rng = random.Random(7)
    mem, root = random_tables(rng, "vtd", 4)
    prog = mem.program()
    _same(vtd.walk_page_table(prog, root, 4, max_tables=5),
          reference_walk(prog, root, 4, 3, ref_vtd_entry, max_tables=5))


def one_gib(scattered: bool) -> tuple[drgn.Program, int]:
    """A 3-level VT-d domain mapping 1 GiB in 4 KiB pages from IOVA 0: physically
    contiguous, or every page elsewhere."""
    mem = Memory()
    root, l2 = mem.table(), mem.table()
    mem.set(root, 0, l2 | 3)
    rng = random.Random(1)
    phys = 0x4000_0000
    for j in range(512):
        l1 = mem.table()
        mem.set(l2, j, l1 | 3)
        words = [(rng.randrange(1 << 26) * PAGE if scattered else phys + (512 * j + i) * PAGE) | 3
                 for i in range(512)]
        mem.pages[l1][:] = struct.pack("<512Q", *words)
    return mem.program(), root


def test_a_contiguous_gigabyte_in_small_pages_is_one_run():
    prog, root = one_gib(scattered=False)
    walk = vtd.walk_page_table(prog, root, 3)
    assert not walk.errors and walk.tables_read == 514
    assert len(walk.runs) == 1 and len(walk.leaves) == 1 << 18
    ranges, summary = walk.summarise()
    assert ranges == [vtd.MappingRange(0, 0x4000_0000, 1 << 30, True, True, False)]
    assert summary == {"ranges": 1, "bytes": 1 << 30, "writable_bytes": 1 << 30, "pages": 1 << 18, "superpages": 0}
    leaf = walk.leaf_at(0x2345_6789)
    top = prog.read_u64(root, True)
    assert leaf.phys == 0x4000_0000 + 0x2345_6000
    assert leaf.path == (top, prog.read_u64((top & ~0xFFF) + (0x2345_6789 >> 21) * 8, True), leaf.phys | 3)
    assert walk.leaves[-1].iova == (1 << 30) - PAGE


def test_a_scattered_gigabyte_is_one_run_per_page_and_as_the_reference():
    prog, root = one_gib(scattered=True)
    walk = vtd.walk_page_table(prog, root, 3)
    assert len(walk.runs) >= (1 << 18) - 100
    # the columns hold 28 bytes a run, not a Python object per entry
    assert sys.getsizeof(walk.runs.iova) + sys.getsizeof(walk.runs.pte) < 5 << 20
    ref = reference_walk(prog, root, 3, 3, ref_vtd_entry)
    assert walk.summarise() == summarise(ref.leaves)


def test_unsupported_levels():
    prog = Memory().program()
    w = vtd.walk_page_table(prog, 0x1000, 6)
    assert w.errors == ["unsupported number of levels 6"] and not w.leaves and w.summarise()[1]["pages"] == 0
    w = amd.walk_v1(prog, 0x1000, 7)
    assert w.errors == ["unsupported paging mode 7"] and not w.leaves


def test_leaf_view_pickles_and_survives_asdict():
    import dataclasses
    import pickle

    from dumpkit.iommu.model import DeviceMappings

    mem, root = random_tables(random.Random(3), "vtd", 3)
    walk = vtd.walk_page_table(mem.program(), root, 3)
    again = pickle.loads(pickle.dumps(walk))
    assert list(again.leaves) == list(walk.leaves) and again.summarise() == walk.summarise()
    dm = DeviceMappings("0000:00:01.0", "context entry", root, 3, "translated", leaves=walk.leaves)
    assert dataclasses.asdict(dm)["leaves"] is walk.leaves


def test_every_sample_dump_walks_as_the_reference():
    import json

    import dumpkit
    from conftest import CACHE, SAMPLES
    from dumpkit.iommu.collect import collect_iommu

    dumps = []
    for root in [SAMPLES, *sorted(CACHE.glob("samples/*"))]:
        manifest = root / "manifest.json"
        if manifest.is_file():
            dumps += [root / d["file"] for d in json.loads(manifest.read_text())["dumps"]
                      if not d["file"].endswith(".xz")]
    assert dumps
    for path in dumps:
        dump = dumpkit.open(path)
        state = collect_iommu(dump)
        prog = dump.prog
        walked = set()
        for e in state.entries:
            if e.translation != "translated" or not e.page_table or (e.page_table, e.levels) in walked:
                continue
            walked.add((e.page_table, e.levels))
            if "amd-vi" in state.vendors:
                new = amd.walk_v1(prog, e.page_table, e.levels, bool(e.read), bool(e.write))
                ref = reference_walk(prog, e.page_table, e.levels, amd.PTE_PR, ref_amd_entry,
                                     (bool(e.read), bool(e.write)))
            else:
                new = vtd.walk_page_table(prog, e.page_table, e.levels)
                ref = reference_walk(prog, e.page_table, e.levels, 3, ref_vtd_entry)
            _same(new, ref)
        assert walked or not state.vendors, path       # a machine without an IOMMU has no tables


def _one_table(words: list[int]) -> tuple[drgn.Program, int]:
    """A 3-level VT-d domain whose only last-level table holds ``words``."""
    mem = Memory()
    root, l2, l1 = mem.table(), mem.table(), mem.table()
    mem.set(root, 0, l2 | 3)
    mem.set(l2, 3, l1 | 3)
    mem.pages[l1][:] = struct.pack("<512Q", *words)
    return mem.program(), root


def _prog(start: int, n: int, flags: int = 3) -> list[int]:
    return [start + k * PAGE | flags for k in range(n)]


LAST_LEVEL_PAGES = {
    "one progression": _prog(0x4000_0000, 512),
    "one entry replaced in the middle": (lambda w: w[:200] + [0x9990_0000 | 3] + w[201:])(_prog(0x4000_0000, 512)),
    "two progressions": _prog(0x4000_0000, 300) + _prog(0x8000_0000, 212),
    "holes and a present-less entry": [0] * 5 + _prog(0x1000_0000, 100) + [0, 1 << 11] + _prog(0x1006_6000, 405),
    "flags change midway": _prog(0x4000_0000, 256) + _prog(0x4010_0000, 256, 1),
    "short runs": [x for k in range(128) for x in _prog(0x100_0000 * (k + 1), 4)],
    "short runs after a long one": _prog(0x4000_0000, 300) + [x for k in range(53) for x in _prog(0x10_0000 * (k + 1), 4)],
    "at the top of the address space": _prog((1 << 52) - 100 * PAGE, 100) + [0] * 412,
    "resumes after a gap": _prog(0x4000_0000, 64) + [0] * 64 + [0x4000_0000 + k * PAGE | 3 for k in range(128, 512)],
    "every other entry": [x if k % 2 else 0 for k, x in enumerate(_prog(0x4000_0000, 512))],
    "scattered": [(k * 7919 % 4093 + 1) * PAGE | 3 for k in range(512)],
    "the last entry only": [0] * 511 + [0x5000 | 3],
}


@pytest.mark.parametrize("name", LAST_LEVEL_PAGES)
def test_last_level_pages_walk_as_the_reference(name):
    prog, root = _one_table(LAST_LEVEL_PAGES[name])
    _same(vtd.walk_page_table(prog, root, 3), reference_walk(prog, root, 3, 3, ref_vtd_entry))
