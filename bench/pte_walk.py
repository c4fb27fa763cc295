#!/usr/bin/env python3
"""PTEs decoded per second: dumpkit's page-table walker (whole table pages, one read
each) against the same walk with raw drgn reads of one PTE at a time, in one run.

    python3 bench/pte_walk.py [--dump sample-dumps/copied-traffic/vmcore.kdump] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import drgn

import dumpkit
from dumpkit.iommu.vtd.pagetable import PTE_ADDR_MASK, PTE_LARGE, Leaf, walk_page_table
from dumpkit.iommu.vtd.tables import collect_context_entries
from dumpkit.iommu.vtd.units import collect_units

REPO = Path(__file__).resolve().parent.parent


def raw_walk(prog: drgn.Program, table: int, level: int, base: int = 0, path: tuple = (),
             out: list | None = None) -> tuple[int, list]:
    """The same walk and the same Leaf records, reading each PTE with its own drgn read."""
    out = [] if out is None else out
    read = 0
    span = 1 << (12 + 9 * (level - 1))
    for i in range(512):
        pte = prog.read_u64(table + i * 8, True)
        read += 1
        if not pte & 3:
            continue
        iova = base + i * span
        if level == 1 or pte & PTE_LARGE:
            out.append(Leaf(iova, pte & PTE_ADDR_MASK, span, bool(pte & 1), bool(pte & 2), level, path + (pte,)))
        else:
            read += raw_walk(prog, pte & PTE_ADDR_MASK, level - 1, iova, path + (pte,), out)[0]
    return read, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", type=Path, default=REPO / "sample-dumps" / "copied-traffic" / "vmcore.kdump")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    prog = dumpkit.open(args.dump).prog
    roots = sorted({(e.page_table, (e.address_width - 30) // 9 + 2)
                    for e in collect_context_entries(prog, collect_units(prog)) if e.page_table})

    def ours():
        walks = [walk_page_table(prog, root, levels) for root, levels in roots]
        return sum(w.entries_decoded for w in walks), sum(len(w.leaves) for w in walks)

    def raw():
        totals = [raw_walk(prog, root, levels) for root, levels in roots]
        return sum(t[0] for t in totals), sum(len(t[1]) for t in totals)

    rows = []
    for name, fn in (("dumpkit (page reads)", ours), ("raw drgn (PTE reads)", raw)):
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            entries, leaves = fn()
            times.append(time.perf_counter() - t)
        secs = statistics.median(times)
        rows.append((name, secs, entries, leaves, entries / secs))
    print(f"dump: {args.dump}  ({len(roots)} page-table roots, median of {args.runs} runs)")
    print(f"{'walker':24}{'seconds':>10}{'PTEs':>10}{'leaves':>9}{'PTE/s':>14}{'speedup':>9}")
    base = rows[1][4]
    for name, secs, entries, leaves, rate in rows:
        print(f"{name:24}{secs:10.4f}{entries:10}{leaves:9}{rate:14,.0f}{rate / base:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
