#!/usr/bin/env python3
"""``dumpkit verdict DUMP`` against a raw drgn script doing open + PCI walk + dmesg, on the
same dump in the same run, each run a fresh Python process (interpreter start, imports and
debug-info loading included, as a user meets them); prints the medians and their ratio.

    python3 bench/verdict_vs_drgn.py [--runs 5] [DUMP[=DEBUGINFO[,DEBUGINFO...]] ...]

Without DUMP: the committed copied-traffic sample (its vmlinux.debug) and, when
scripts/setup generated it, the stock-kernel distro-copied-traffic sample in the cache (its
unpacked -dbg tree). One untimed warm-up run per side; the timed processes write and use
bytecode caches even under PYTHONDONTWRITEBYTECODE, as an installed package would. Both sides get the same debug files: dumpkit as ``--debuginfo``
arguments, the drgn script as the vmlinux and .ko files found under them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")

# what a support engineer would type into a file to get the same facts with drgn alone
RAW_DRGN = r"""
import sys
import drgn
from drgn.helpers.linux.pci import for_each_pci_dev
from drgn.helpers.linux.printk import get_printk_records

prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.set_enabled_debug_info_finders([])
prog.load_debug_info(sys.argv[2:], main=True)
devices = 0
for pdev in for_each_pci_dev(prog):
    devices += 1
    vendor, device = pdev.vendor.value_(), pdev.device.value_()
    cls, busmaster = pdev.member_("class").value_(), pdev.is_busmaster.value_()
    driver = pdev.driver.name.string_().decode() if pdev.driver else None
    print(f"{vendor:04x}:{device:04x} {cls:06x} bm={busmaster} {driver}")
records = get_printk_records(prog)
print(devices, "functions,", len(records), "log records")
"""

__all__ = ["Case", "Timing", "default_cases", "main", "time_pair"]


@dataclass
class Case:
    """One dump and the debug files both sides are given."""

    label: str
    dump: Path
    debuginfo: list[Path]

    def debug_files(self) -> list[str]:
        """The vmlinux and module files under ``debuginfo`` (directories searched), for drgn."""
        out: list[str] = []
        for p in self.debuginfo:
            if p.is_dir():
                out += sorted(str(f) for f in p.rglob("*") if f.is_file() and
                              (f.name.startswith("vmlinux") or f.suffix == ".ko" or f.name.endswith(".ko.debug")))
            else:
                out.append(str(p))
        return out


def default_cases() -> list[Case]:
    """The committed sample and, when present, the newest stock-kernel sample in the cache."""
    manifest = json.loads((REPO / "sample-dumps" / "manifest.json").read_text())
    cases = [Case("committed tinyconfig sample copied-traffic", REPO / "sample-dumps" / "copied-traffic" /
                  "vmcore.kdump", [REPO / "sample-dumps" / manifest["kernel"]["debug_file"]])]
    roots = sorted((CACHE / "samples").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    for m in reversed(roots):
        kernel = json.loads(m.read_text())["kernel"]
        dump = m.parent / "distro-copied-traffic" / "vmcore.kdump"
        if kernel.get("debug_dir") and dump.exists():
            cases.append(Case(f"stock kernel {kernel['kernel_release']} distro-copied-traffic", dump,
                              [(m.parent / kernel["debug_dir"]).resolve()]))
            break
    return cases


def _child_env() -> dict[str, str]:
    """The environment of the timed processes: bytecode caching on, as after ``pip install``
    (a PYTHONDONTWRITEBYTECODE shell would otherwise compile every module on every run)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@dataclass
class Timing:
    """One fresh process: wall seconds and CPU seconds (user + system, its threads included)."""

    wall: float
    cpu: float


def _run(argv: list[str]) -> Timing:
    """Time one fresh process running ``argv`` (output discarded; a failure stops the bench)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return Timing(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def time_pair(first: list[str], second: list[str], runs: int) -> tuple[list[Timing], list[Timing]]:
    """``runs`` fresh processes of each command, alternating so that a change in the
    machine's load falls on both alike, after one untimed warm-up run of each (bytecode
    written, page cache filled)."""
    _run(first), _run(second)
    times: tuple[list[Timing], list[Timing]] = ([], [])
    for _ in range(runs):
        times[0].append(_run(first))
        times[1].append(_run(second))
    return times


def dumpkit_argv(case: Case) -> list[str]:
    exe = shutil.which("dumpkit")
    base = [exe] if exe else [sys.executable, "-m", "dumpkit.cli"]
    return base + ["verdict", str(case.dump)] + [a for p in case.debuginfo for a in ("--debuginfo", str(p))]


def _parse_case(text: str) -> Case:
    dump, _, debug = text.partition("=")
    return Case(dump, Path(dump), [Path(p) for p in debug.split(",") if p])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="DUMP[=DEBUGINFO,...]", help="dumps to time (default: see above)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per side (median; default 5)")
    args = ap.parse_args()
    cases = [_parse_case(c) for c in args.cases] or default_cases()
    print(f"median of {args.runs} runs, each in a fresh process; target: dumpkit verdict <= 1.2x raw drgn")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; wall seconds, then CPU seconds "
          "(user + system, less sensitive to other load)")
    print(f"{'dump':46}{'raw wall':>9}{'verdict':>9}{'ratio':>7}{'raw cpu':>9}{'verdict':>9}{'ratio':>7}")
    for case in cases:
        raw_times, verdict_times = time_pair([sys.executable, "-c", RAW_DRGN, str(case.dump), *case.debug_files()],
                                             dumpkit_argv(case), args.runs)
        raw = statistics.median(t.wall for t in raw_times)
        verdict = statistics.median(t.wall for t in verdict_times)
        raw_cpu = statistics.median(t.cpu for t in raw_times)
        verdict_cpu = statistics.median(t.cpu for t in verdict_times)
        print(f"{case.label[:45]:46}{raw:9.3f}{verdict:9.3f}{verdict / raw:6.2f}x"
              f"{raw_cpu:9.3f}{verdict_cpu:9.3f}{verdict_cpu / raw_cpu:6.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
