#!/usr/bin/env python3
"""Time "open a vmcore and list its PCI devices" three ways in one run and print ratios:
raw drgn (open + for_each_pci_dev reading ids), dumpkit (open + full PciTree with
DMA-relevant state), crash (``dev -p``, if installed).

    python3 bench/open_and_pci.py [--dump sample-dumps/copied-traffic/vmcore.kdump] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import drgn
from drgn.helpers.linux.pci import for_each_pci_dev

import dumpkit

REPO = Path(__file__).resolve().parent.parent


def timed(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def raw_drgn(dump: Path, debug: Path) -> int:
    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    prog.load_debug_info([str(debug)])
    return sum(1 for d in for_each_pci_dev(prog)
               if (d.vendor.value_(), d.device.value_(), d.member_("class").value_()))


def with_dumpkit(dump: Path) -> int:
    return len(dumpkit.open(dump).pci())


def with_crash(dump: Path, plain_debug: Path) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as cmds:
        cmds.write("dev -p\nquit\n")
        cmds.flush()
        out = subprocess.run(["crash", "-s", "--kaslr=auto", "-i", cmds.name, str(plain_debug), str(dump)],
                             capture_output=True, text=True, timeout=300).stdout
    return len({line.split()[1] for line in out.splitlines()
                if line.strip().startswith("ffff") and ":" in line and len(line.split()) > 2})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", type=Path, default=REPO / "sample-dumps" / "copied-traffic" / "vmcore.kdump")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    manifest = json.loads((REPO / "sample-dumps" / "manifest.json").read_text())
    debug = REPO / "sample-dumps" / manifest["kernel"]["debug_file"]

    results = {}
    results["raw drgn"] = timed(lambda: raw_drgn(args.dump, debug), args.runs)
    results["dumpkit"] = timed(lambda: with_dumpkit(args.dump), args.runs)
    if shutil.which("crash"):
        with tempfile.TemporaryDirectory() as tmp:
            # crash's gdb cannot read zstd-compressed sections: give it a decompressed copy (not timed)
            plain = Path(tmp) / "vmlinux"
            subprocess.run(["objcopy", "--decompress-debug-sections", str(debug), str(plain)], check=True)
            results["crash dev -p"] = timed(lambda: with_crash(args.dump, plain), max(1, args.runs // 2))
    base = results["raw drgn"][0]
    print(f"dump: {args.dump}  (median of {args.runs} runs; crash: {max(1, args.runs // 2)})")
    print(f"{'tool':16}{'seconds':>10}{'functions':>11}{'vs raw drgn':>13}")
    for name, (secs, count) in results.items():
        print(f"{name:16}{secs:10.3f}{count:11}{secs / base:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
