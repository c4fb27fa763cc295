#!/usr/bin/env python3
"""IOMMU page-table walk, in one run:

1. PTEs decoded per second on the biggest VT-d domain of the sample dumps (one mapping
   >= 1 GiB in 4 KiB pages when a sample has one): dumpkit's walk (whole table pages,
   decoded a page at a time into runs), alone and with the coalesced ranges made from
   them (the ``MappingRange`` list a device's mappings hold), against a raw drgn walk
   reading one PTE at a time and coalescing the same ranges as it goes; alternating,
   medians; the two must give the same ranges.
2. Growth: the verdict (``dumpkit.verdict.judge``, the library call of ``dumpkit
   verdict``, with the capture logs found beside the dump) and its page-table walks on
   dumps of about 16 K, 256 K and >= 1 M PTEs; a size class no sample dump falls into is
   skipped with one line.

Dumps are found through the sample manifests: the committed ``sample-dumps/manifest.json``
and ``$DUMPKIT_CACHE/samples/*/manifest.json`` (default ``~/.cache/dumpkit``). A dump's PTE
count is the entries decoded over its distinct page-table roots (512 a table page read).

    python3 bench/pte_walk.py [--runs 5] [--verdict-runs 3] [--dump PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dumpkit
from dumpkit.iommu.collect import collect_iommu
from dumpkit.iommu.model import MappingRange
from dumpkit.iommu.vtd.pagetable import PTE_ADDR_MASK, PTE_LARGE, walk_page_table

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
GIB = 1 << 30
CLASSES = (("~16 K", 16 << 10, 8 << 10, 32 << 10), ("~256 K", 256 << 10, 128 << 10, 512 << 10),
           (">= 1 M", 1 << 20, 1 << 20, None))


@dataclass
class Domain:
    vendor: str
    device: str
    root: int
    levels: int
    ptes: int
    pages: int
    ranges: int
    small_bytes: int          # bytes mapped in 4 KiB pages


@dataclass
class Sample:
    path: Path
    label: str
    ptes: int = 0
    ranges: int = 0
    domains: list[Domain] = field(default_factory=list)


def manifest_dumps(only: Path | None = None) -> list[tuple[Path, str]]:
    """First-kernel vmcores of every manifest (committed, then the cache's)."""
    manifests = [REPO / "sample-dumps" / "manifest.json", *sorted((CACHE / "samples").glob("*/manifest.json"))]
    out = []
    for m in manifests:
        if not m.is_file():
            continue
        for d in json.loads(m.read_text())["dumps"]:
            path = m.parent / d["file"]
            if d["kind"] != "first-kernel vmcore" or path.suffix == ".xz" or not path.is_file():
                continue
            if only is None or path.resolve() == only.resolve():
                out.append((path, f"{d.get('kernel_release', '?')} {d['scenario']}"))
    if only is not None and not out:
        out.append((only, only.name))
    return out


def survey(path: Path, label: str) -> Sample:
    """The dump's page-table roots as the verdict walks them (distinct roots once)."""
    dump = dumpkit.open(path)
    state = collect_iommu(dump, [])
    sample = Sample(path, label)
    seen = set()
    for m in state.mappings:
        if m.root is None or not m.entries_decoded or (m.root, m.levels) in seen:
            continue
        seen.add((m.root, m.levels))
        pages = m.summary.get("pages") or 0
        small = (pages - (m.summary.get("superpages") or 0)) * 4096
        sample.domains.append(Domain(m.source, m.device, m.root, m.levels, m.entries_decoded, pages,
                                     len(m.ranges), small))
        sample.ptes += m.entries_decoded
        sample.ranges += len(m.ranges)
    return sample


def raw_walk(prog, table: int, level: int, base: int, out: list) -> int:
    """One drgn read per PTE, coalescing leaves into ranges as it goes; PTEs read."""
    span = 1 << (12 + 9 * (level - 1))
    read = 0
    for i in range(512):
        pte = prog.read_u64(table + i * 8, True)
        read += 1
        if not pte & 3:
            continue
        iova = base + i * span
        if level == 1 or (pte & PTE_LARGE and level <= 3):
            phys, r, w = pte & PTE_ADDR_MASK, bool(pte & 1), bool(pte & 2)
            last = out[-1] if out else None
            if last and last[0] + last[2] == iova and last[1] + last[2] == phys and last[3] == r and last[4] == w:
                last[2] += span
                last[5] = last[5] or span > 4096
            else:
                out.append([iova, phys, span, r, w, span > 4096])
        else:
            read += raw_walk(prog, pte & PTE_ADDR_MASK, level - 1, iova, out)
    return read


def bench_walk(sample: Sample, dom: Domain, runs: int) -> None:
    prog = dumpkit.open(sample.path).prog
    raw_name = "raw drgn: a read a PTE"

    def runs_only():
        walk = walk_page_table(prog, dom.root, dom.levels)
        return walk.entries_decoded, None

    def ours():
        walk = walk_page_table(prog, dom.root, dom.levels)
        return walk.entries_decoded, walk.summarise()[0]

    def raw():
        out: list = []
        n = raw_walk(prog, dom.root & ~0xFFF, dom.levels, 0, out)
        return n, [MappingRange(*x) for x in out]

    sides = {"dumpkit: walk (runs)": runs_only, "dumpkit: walk + ranges": ours, raw_name: raw}
    times: dict[str, list[float]] = {k: [] for k in sides}
    results = {k: fn() for k, fn in sides.items()}                 # warm-up, untimed
    assert results["dumpkit: walk + ranges"] == results[raw_name], "the two walks disagree"
    for _ in range(runs):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    print(f"walk: {sample.label}: {sample.path}")
    print(f"  domain of {dom.device}: root {dom.root:#x}, {dom.levels} levels, {dom.ptes} PTEs decoded, "
          f"{dom.pages} leaves, {dom.small_bytes / GIB:.2f} GiB in 4 KiB pages, {dom.ranges} ranges "
          f"(median of {runs} runs, alternating)")
    print(f"  {'walker':28}{'seconds':>10}{'PTE/s':>14}{'vs raw':>8}")
    base = dom.ptes / statistics.median(times[raw_name])
    for name in sides:
        secs = statistics.median(times[name])
        print(f"  {name:28}{secs:10.4f}{dom.ptes / secs:14,.0f}{dom.ptes / secs / base:7.1f}x")


def judge_once(path: Path) -> tuple[float, float]:
    """(verdict seconds, seconds of its page-table walks) on a freshly opened dump."""
    from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.verdict import judge

    dump = dumpkit.open(path)
    logs = [] if dump.kdump().capture_kernel else find_capture_logs(dump.path)
    t = time.perf_counter()
    judge(dump, logs)
    verdict = time.perf_counter() - t
    walks = 0.0
    prog = dumpkit.open(path).prog
    for dom in survey_cache[path].domains:
        if dom.vendor != "context entry":
            continue
        t = time.perf_counter()
        walk_page_table(prog, dom.root, dom.levels).summarise()
        walks += time.perf_counter() - t
    return verdict, walks


survey_cache: dict[Path, Sample] = {}


def bench_growth(samples: list[Sample], runs: int) -> None:
    print(f"\nverdict by size (judge() with the capture logs beside the dump, dump opened before; median of {runs})")
    print(f"  {'class':8}{'PTEs':>10}{'ranges':>8}{'verdict s':>11}{'walks s':>10}{'walk ns/PTE':>13}  dump")
    for name, target, lo, hi in CLASSES:
        fits = [s for s in samples if s.ptes >= lo and (hi is None or s.ptes < hi)]
        if not fits:
            have = ", ".join(sorted({f"{s.ptes}" for s in samples}, key=int))
            print(f"  {name:8} skipped: no sample dump with {lo}{f'-{hi}' if hi else '+'} PTEs (have: {have})")
            continue
        s = min(fits, key=lambda x: abs(math.log(x.ptes / target)))
        got = [judge_once(s.path) for _ in range(runs)]
        verdict = statistics.median(g[0] for g in got)
        walks = statistics.median(g[1] for g in got)
        print(f"  {name:8}{s.ptes:10}{s.ranges:8}{verdict:11.3f}{walks:10.4f}{walks / s.ptes * 1e9:13.0f}  "
              f"{s.label} ({s.path})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", type=Path, help="walk this dump's biggest domain (default: the biggest of all samples)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--verdict-runs", type=int, default=3)
    args = ap.parse_args()
    samples = []
    for path, label in manifest_dumps():
        try:
            samples.append(survey_cache.setdefault(path, survey(path, label)))
        except Exception as e:  # noqa: BLE001 - a dump this bench cannot open is named, not fatal
            print(f"skipped {path}: {e}", file=sys.stderr)
    if args.dump is not None and args.dump.resolve() not in {s.path.resolve() for s in samples}:
        samples.append(survey_cache.setdefault(args.dump, survey(args.dump, args.dump.name)))
    pool = [s for s in samples if args.dump is None or s.path.resolve() == args.dump.resolve()]
    vtd = [(s, d) for s in pool for d in s.domains if d.vendor == "context entry"]
    if not vtd:
        print("no VT-d domain in the sample dumps")
        return 1
    big = [x for x in vtd if x[1].small_bytes >= GIB]
    sample, dom = max(big or vtd, key=lambda x: x[1].ptes)
    if not big:
        print(f"no sample domain maps >= 1 GiB in 4 KiB pages; walking the biggest ({dom.ptes} PTEs)")
    bench_walk(sample, dom, args.runs)
    bench_growth(samples, args.verdict_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
