#!/usr/bin/env python3
"""Triage throughput in one run: dumps per minute on dask.distributed at 1 and 2 workers
(the embedded LocalCluster ``dumpkit triage`` starts; cluster start-up timed apart),
scaling efficiency, peak RSS per worker process; against the fork-per-dump engine
(``--engine fork``, the triage before dask) at the same parallelism, and a shell loop
running ``crash`` (``dev -p; log``) per dump when crash is installed.

    python3 bench/triage_throughput.py [--repeat 2] [--debuginfo ~/.cache/dumpkit/distro/*/debug]

Dumps: every dump under sample-dumps/ and the stock-kernel samples in the cache, the list
repeated ``--repeat`` times. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dumpkit.fleet.debugindex import DebugIndex, dump_identity  # noqa: E402
from dumpkit.triage import find_dumps, iter_triage  # noqa: E402

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")


class PeakRss:
    """Largest RSS any one descendant process of this one reached (sampled every 50 ms)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                try:
                    self.peak = max(self.peak, p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def bench_dask(paths, workers: int, index) -> dict:
    from dumpkit.fleet.engine import connect, run_on_cluster
    from dumpkit.fleet.rows import analyse_for_fleet

    t0 = time.perf_counter()
    with connect(workers=workers) as client:
        started = time.perf_counter() - t0
        # one warm-up dump per worker: imports and the PCI id table, as a long run amortises them
        list(run_on_cluster(client, paths[:workers], analyse_for_fleet, index=index, timeout=600))
        with PeakRss() as rss:
            t = time.perf_counter()
            rows = [r["row"] for _i, r in run_on_cluster(client, paths, analyse_for_fleet, index=index,
                                                          timeout=600)]
            wall = time.perf_counter() - t
        worker_peak = max(client.run(_maxrss).values())
    ok = sum(r["status"] == "ok" for r in rows)
    _failures(f"dask {workers}", rows)
    return {"wall": wall, "ok": ok, "n": len(rows), "start": started, "rss": max(rss.peak, worker_peak)}


def _failures(name: str, rows) -> None:
    for r in [r for r in rows if r["status"] != "ok"][:3]:
        print(f"    {name} failed: {r['path']}: {r.get('error') or r.get('reason')}", flush=True)


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_fork(paths, jobs: int, debuginfo) -> dict:
    with PeakRss() as rss:
        t = time.perf_counter()
        rows = [row for _i, row in iter_triage(paths, jobs=jobs, timeout=600, debuginfo=debuginfo)]
        wall = time.perf_counter() - t
    _failures(f"fork {jobs}", rows)
    return {"wall": wall, "ok": sum(r["status"] == "ok" for r in rows), "n": len(rows), "rss": rss.peak}


def bench_crash(paths, index, tmp: Path) -> dict | None:
    if not shutil.which("crash"):
        return None
    plain: dict[str, Path] = {}
    pairs = []
    for p in paths:
        _release, bid = dump_identity(p)
        kernel = index.lookup(bid)
        if kernel is None:
            continue
        if bid not in plain:        # crash's gdb reads no compressed sections: a plain copy (not timed)
            plain[bid] = tmp / f"vmlinux-{bid[:12]}"
            subprocess.run(["objcopy", "--decompress-debug-sections", kernel.vmlinux, str(plain[bid])], check=True)
        pairs.append((plain[bid], p))
    cmds = tmp / "cmds"
    cmds.write_text("dev -p\nlog\nquit\n")
    script = tmp / "loop.sh"
    script.write_text("ok=0\nwhile read -r vmlinux dump; do\n"
                      f"  timeout 300 crash -s --kaslr=auto -i {cmds} \"$vmlinux\" \"$dump\" "
                      "2>/dev/null | grep -q 'Linux version' && ok=$((ok+1))\n"
                      "done\necho $ok\n")
    listing = "".join(f"{v} {d}\n" for v, d in pairs)
    with PeakRss() as rss:
        t = time.perf_counter()
        out = subprocess.run(["bash", str(script)], input=listing, capture_output=True, text=True)
        wall = time.perf_counter() - t
    return {"wall": wall, "ok": int(out.stdout.strip() or 0), "n": len(pairs), "rss": rss.peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="times the dump list is triaged in each run")
    ap.add_argument("--debuginfo", action="append", default=None,
                    help="debug trees for the index (default: the sample kernel and the cache's stock kernel)")
    ap.add_argument("--no-crash", action="store_true", help="skip the crash loop")
    args = ap.parse_args()
    debug = args.debuginfo or [str(REPO / "sample-dumps" / "kernel"),
                               *map(str, sorted((CACHE / "distro").glob("*/debug")))]
    index = DebugIndex.build(debug)
    roots = [REPO / "sample-dumps", *sorted((CACHE / "samples").glob("*/"))]
    base = [str(p) for p in find_dumps([r for r in roots if r.is_dir()])]
    paths = base * args.repeat
    print(f"{len(base)} dumps x {args.repeat} = {len(paths)} per run; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start")

    results = {}
    for n in (1, 2):
        r = bench_dask(paths, n, index)
        results[f"dask, {n} worker{'s' * (n > 1)}"] = r
        print(f"  dask {n}: cluster start {r['start']:.1f} s, {r['wall']:.1f} s", flush=True)
    for n in (1, 2):
        results[f"fork per dump, {n} job{'s' * (n > 1)}"] = bench_fork(paths, n, None)
        print(f"  fork {n}: {results[f'fork per dump, {n} job' + 's' * (n > 1)]['wall']:.1f} s", flush=True)
    if not args.no_crash:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_crash(paths, index, Path(tmp))
        if r is not None:
            results["crash loop (dev -p; log)"] = r

    print(f"\n{'engine':28}{'dumps':>7}{'ok':>5}{'seconds':>9}{'dumps/min':>11}{'peak RSS/proc':>15}"
          f"{'vs dask 1':>11}")
    ref = len(paths) / results["dask, 1 worker"]["wall"]
    for name, r in results.items():
        rate = r["n"] / r["wall"] * 60
        print(f"{name:28}{r['n']:7}{r['ok']:5}{r['wall']:9.1f}{rate:11.1f}{r['rss'] / 2**20:12.0f} MiB"
              f"{rate / 60 / ref:10.2f}x")
    d1, d2 = results["dask, 1 worker"]["wall"], results["dask, 2 workers"]["wall"]
    f1, f2 = results["fork per dump, 1 job"]["wall"], results["fork per dump, 2 jobs"]["wall"]
    print(f"\nscaling efficiency 1 -> 2 workers: dask {d1 / d2 / 2:.0%}, fork {f1 / f2 / 2:.0%}")
    print(f"dask vs fork per dump: {f1 / d1:.2f}x at 1, {f2 / d2:.2f}x at 2")
    if "crash loop (dev -p; log)" in results:
        c = results["crash loop (dev -p; log)"]
        print(f"dask 2 workers vs crash loop: {(c['wall'] / c['n']) / (d2 / len(paths)):.2f}x "
              f"(crash does far less: PCI list and log, no verdicts)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
