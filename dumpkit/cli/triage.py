"""dumpkit triage: many dumps into one table, each dump a task with time and memory limits,
rows written as the dumps finish (the fleet dataset: :mod:`dumpkit.cli.dataset`)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from dumpkit.cli.batch import debug_index, summary
from dumpkit.cli.dataset import triage_dataset
from dumpkit.cli.output import TRIAGE_FORMATS, add_format
from dumpkit.cli.shared import check_output
from dumpkit.errors import InputError, Interrupted, UsageError

NAME = "triage"
HELP = ("many dumps into one table on a dask.distributed cluster (embedded by default), each "
        "dump a task with time and memory limits; rows are written as dumps finish, capture-state "
        "dumps are marked, not counted as crashes. -o DIR --format parquet writes the resumable "
        "fleet dataset (docs/fleet-triage.md)")
EXAMPLES = ["dumpkit triage sample-dumps --jobs 2 --format csv -o triage.csv",
            "dumpkit triage /var/crash --debuginfo /srv/debug -o fleet/ --format parquet   # resumable dataset",
            "dumpkit triage DUMPS... --scheduler tcp://10.0.0.5:8786 --format jsonl"]
GLOBALS = ("--debuginfo", "--debuginfod")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def memory_size(text: str) -> int:
    """A memory size such as 4GiB (parsed by the fleet engine, imported only when given:
    it pulls in pyarrow)."""
    from dumpkit.fleet.engine import parse_memory

    return parse_memory(text)


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="dump files or directories to search for dumps")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes of the embedded cluster (one thread each), at least 1 "
                        "(default: one per core, as many as fit in memory at --memory-limit each)")
    p.add_argument("--timeout", type=positive_seconds, default=300,
                   help="seconds allowed per dump; a dump over it gets an error row (default 300)")
    p.add_argument("--memory-limit", type=memory_size, default=4 << 30, metavar="SIZE",
                   help="memory per worker of the embedded cluster, so per dump (default 4GiB); a worker "
                        "over it is restarted and its dump retried once, then reported")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on this existing dask cluster instead of an embedded one (workers must see "
                        "the dumps and debug trees under the same paths)")
    p.add_argument("--scheduler-file", metavar="FILE", help="run on the dask cluster this scheduler file names")
    p.add_argument("--engine", choices=["dask", "fork"], default="dask",
                   help="dask (default) or fork: one forked process per dump, no dataset")
    p.add_argument("--force", action="store_true",
                   help="with a dataset: analyse again dumps already in it (default: skip them)")
    add_format(p, TRIAGE_FORMATS, default="csv", flags=(), metavar=None,
               format_help="csv (default), json (an array), jsonl (one object a line) or parquet: with -o DIR "
                           "(a directory, or a name not ending in .parquet) the fleet dataset DIR/dumps and "
                           "DIR/endpoints, one fragment per dump; with -o FILE.parquet one table (rows kept in "
                           "FILE.partial.jsonl until it is written)")
    p.add_argument("-o", "--output", metavar="FILE|DIR", help="write the table here (default: standard "
                   "output); its directory must exist")


def run(args) -> int:
    from dumpkit.triage import RowWriter, find_dumps

    if args.format == "parquet" and args.output is None:
        raise UsageError("--format parquet needs -o FILE or -o DIR", "give an output file or directory")
    paths = find_dumps(args.paths)
    if not paths:
        raise InputError(f"no dumps found in {', '.join(args.paths)}",
                         "pass vmcore files or the directories holding them")
    if args.engine == "fork" and (args.scheduler or args.scheduler_file):
        raise UsageError("--scheduler and --scheduler-file need --engine dask", "drop --engine fork")
    dataset = args.format == "parquet" and args.output is not None and (
        Path(args.output).is_dir() or not args.output.endswith(".parquet"))
    if dataset:
        return triage_dataset(args, paths)
    if args.output:
        check_output(args.output, [*args.paths, *(args.debuginfo or [])], dumps=paths)
    writer = RowWriter(args.output, args.format)
    with terminate_as_interrupt():
        return triage_rows(args, paths, writer)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a batch system's stop, ``kill``) ends triage as Ctrl-C does: the rows of
    the dumps that finished are written and the output is complete."""
    import signal

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _rows(args, paths, finished: list, progress: bool):
    """The rows of ``paths`` as they finish, on the fork or the dask engine."""
    from dumpkit.fleet.rows import iter_triage_cluster
    from dumpkit.triage import iter_triage

    if args.engine == "fork":
        return iter_triage(paths, jobs=args.jobs or 1, timeout=args.timeout, debuginfo=args.debuginfo,
                           progress=progress, debuginfod=args.debuginfod, finished=finished)
    return iter_triage_cluster(paths, timeout=args.timeout, debuginfo=args.debuginfo, progress=progress,
                               debuginfod=args.debuginfod, finished=finished, workers=args.jobs,
                               scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                               memory_limit=args.memory_limit, index=debug_index(args))


def triage_rows(args, paths, writer) -> int:
    """Write each dump's row as it finishes; on an interruption, the finished rows too."""
    progress = sys.stderr.isatty()
    finished: list = []
    rows: list[dict] = []
    gen = _rows(args, paths, finished, progress)
    try:
        for _i, row in gen:
            writer.write(row)
            rows.append(row)
    except BaseException as e:
        gen.close()                      # stops the workers, hands over the finished rows
        try:
            for _i, row in finished:
                writer.write(row)
                rows.append(row)
        finally:
            writer.close()
        if isinstance(e, KeyboardInterrupt):
            if progress:
                print(file=sys.stderr)
            raise Interrupted(f"interrupted after {len(rows)} of {len(paths)} dumps",
                              f"their rows are in {writer.where}") from None
        raise
    writer.close()
    return summary(rows, progress)
