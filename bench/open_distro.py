#!/usr/bin/env python3
"""Open time of a stock-kernel dump with its debug info as the -dbg package ships it, in
one run: raw drgn (vmlinux + the loaded modules' .ko files given by path) against
dumpkit (--debuginfo DIR: build-id matching over the unpacked tree), with the vmlinux
only, with a zstd-compressed copy of the vmlinux, and the tinyconfig sample for scale.

    python3 bench/open_distro.py [--runs 5]

Needs the stock-kernel samples scripts/setup generates into ~/.cache/dumpkit/samples/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import drgn

import dumpkit

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def raw_drgn(dump: Path, vmlinux: Path, kos: list[str]) -> None:
    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    prog.set_enabled_debug_info_finders([])
    prog.load_debug_info([str(vmlinux), *kos], main=True)
    prog.type("struct e1000_adapter", "e1000e/e1000.h")


def with_dumpkit(dump: Path, debuginfo: list[Path]) -> None:
    dumpkit.open(dump, debuginfo=debuginfo).prog.type("struct pci_dev")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    roots = sorted((CACHE / "samples").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    roots = [r.parent for r in roots if json.loads(r.read_text())["kernel"].get("debug_dir")]
    if not roots:
        print("no stock-kernel samples: run scripts/setup", file=sys.stderr)
        return 1
    root = roots[-1]
    kernel = json.loads((root / "manifest.json").read_text())["kernel"]
    dump = root / "distro-copied-traffic" / "vmcore.kdump"
    debug_dir = (root / kernel["debug_dir"]).resolve()
    vmlinux = (root / kernel["debug_file"]).resolve()
    kos = [str(p) for p in debug_dir.rglob("*.ko")]
    tiny = REPO / "sample-dumps" / "copied-traffic" / "vmcore.kdump"
    tiny_debug = REPO / "sample-dumps" / "kernel" / "vmlinux.debug"

    rows = {}
    rows["raw drgn: vmlinux + .ko paths"] = timed(lambda: raw_drgn(dump, vmlinux, kos), args.runs)
    rows["dumpkit --debuginfo DIR"] = timed(lambda: with_dumpkit(dump, [debug_dir]), args.runs)
    rows["dumpkit --debuginfo vmlinux only"] = timed(lambda: with_dumpkit(dump, [vmlinux]), args.runs)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        z = Path(tmp) / "usr/lib/debug/boot" / vmlinux.name
        z.parent.mkdir(parents=True)
        t = time.perf_counter()
        subprocess.run(["objcopy", "--compress-debug-sections=zstd", str(vmlinux), str(z)], check=True)
        compress_s = time.perf_counter() - t
        modules = Path(tmp) / "usr/lib/debug/lib"
        os.symlink(debug_dir / "usr/lib/debug/lib", modules)
        rows["dumpkit, vmlinux zstd-compressed"] = timed(lambda: with_dumpkit(dump, [Path(tmp)]), args.runs)
        sizes = (vmlinux.stat().st_size, z.stat().st_size)
    rows["raw drgn: tinyconfig sample"] = timed(lambda: _raw_tiny(tiny, tiny_debug), args.runs)
    rows["dumpkit: tinyconfig sample"] = timed(lambda: with_dumpkit(tiny, [tiny_debug]), args.runs)
    base = rows["raw drgn: vmlinux + .ko paths"]
    print(f"stock kernel {kernel['kernel_release']} ({kernel.get('debug_package')}); median of {args.runs} runs")
    print(f"vmlinux {sizes[0] / 2**20:.0f} MiB; zstd-compressed sections {sizes[1] / 2**20:.0f} MiB "
          f"(objcopy {compress_s:.0f} s)")
    print(f"{'open':38}{'seconds':>9}{'vs raw drgn':>13}")
    for name, secs in rows.items():
        print(f"{name:38}{secs:9.3f}{secs / base:12.2f}x")
    return 0


def _raw_tiny(dump: Path, debug: Path) -> None:
    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    prog.set_enabled_debug_info_finders([])
    prog.load_debug_info([str(debug)], main=True)


if __name__ == "__main__":
    sys.exit(main())
