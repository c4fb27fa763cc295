"""dumpkit triage -o DIR --format parquet: the resumable fleet dataset, one fragment per
dump as it finishes; dumps already in it (same file, same dumpkit version, status ok) are
skipped unless --force."""

from __future__ import annotations

import sys
from pathlib import Path

from dumpkit.cli.batch import debug_index, summary
from dumpkit.errors import Interrupted, OutputError, UsageError


def open_dataset(args):
    """The dataset directory of -o, created if new (exit 8 when it cannot be)."""
    from dumpkit.fleet.dataset import Dataset

    if args.engine == "fork":
        raise UsageError("a Parquet dataset directory needs --engine dask",
                          "drop --engine fork, or give -o FILE.parquet")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write dataset {out}: it is a file", "give a directory")
    if not (out if out.exists() else out.parent if str(out.parent) else Path(".")).is_dir():
        raise OutputError(f"cannot write {out}: directory {out.parent} does not exist", "create it first")
    ds = Dataset(out)
    try:
        ds.create()
    except OSError as e:
        raise OutputError(f"cannot write dataset {out}: {e.strerror}", "choose a writable location") from None
    return ds, out


def _analyse(args, ds, out: Path, todo: list, shas: set, rows: list[dict], progress: bool) -> int:
    """Analyse ``todo`` on the cluster, each finished dump's row and endpoints written to
    the dataset and its row kept in ``rows``; returns how many the dataset already had
    (by sha256)."""
    from dumpkit.fleet.engine import connect, run_on_cluster
    from dumpkit.fleet.rows import analyse_for_fleet

    skipped = 0
    with connect(args.scheduler, args.scheduler_file, args.jobs, args.memory_limit) as client:
        results = run_on_cluster(client, todo, analyse_for_fleet, index=debug_index(args),
                                 debuginfo=args.debuginfo,
                                 debuginfod=args.debuginfod, timeout=args.timeout, skip_shas=shas,
                                 want_sha=True, progress=progress,
                                 memory_limit=None if args.scheduler or args.scheduler_file
                                 else args.memory_limit)
        try:
            for _i, result in results:
                if result["skipped"]:
                    skipped += 1
                    continue
                try:
                    ds.write(result["row"], result["endpoints"])
                except OSError as e:
                    raise OutputError(f"writing dataset {out} failed: {e.strerror}",
                                      "free space or choose another location") from None
                rows.append(result["row"])
        finally:
            results.close()
    return skipped


def triage_dataset(args, paths) -> int:
    ds, out = open_dataset(args)
    paths = [p.resolve() for p in paths]
    shas, stats = (set(), set()) if args.force else ds.done()
    todo = []
    for p in paths:
        st = p.stat()
        if (str(p), st.st_size, st.st_mtime_ns) not in stats:
            todo.append(p)
    skipped = len(paths) - len(todo)
    progress = sys.stderr.isatty()
    rows: list[dict] = []
    try:
        if todo:
            skipped += _analyse(args, ds, out, todo, shas, rows, progress)
    except KeyboardInterrupt:
        if progress:
            print(file=sys.stderr)
        raise Interrupted(f"interrupted after {len(rows)} of {len(todo)} dumps",
                          f"their rows are in {out}; run again to do the rest") from None
    return summary(rows, progress, done=f", {skipped} already in {out}")
