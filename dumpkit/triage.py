"""Batch triage: many dumps, each in a worker process with a time limit; one bad dump gets
an error row and never costs the others. Two engines: dask.distributed
(:func:`iter_triage_cluster`, :mod:`dumpkit.fleet`: an embedded LocalCluster or an existing
cluster, and the Parquet dataset of a fleet) and one forked process per dump
(:func:`iter_triage`, ``--engine fork``).

Rows reach the output as the dumps finish (in input order, each as soon as every dump
before it is done), so an interruption or a crash keeps every finished row. A dump taken
of a running capture kernel is a "capture-state dump", not a crash: its row says so and
names the crash dump in the same directory.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = ["COLUMNS", "FORMATS", "RowWriter", "analyse", "check_output", "find_dumps", "iter_triage",
           "iter_triage_cluster", "triage", "triage_one"]

DUMP_MAGICS = (b"KDUMP   ", b"\x7fELF", b"makedumpfile\0")
KIND_CRASH = "crash"
KIND_CAPTURE = "capture-state dump"
KIND_NOT_A_DUMP = "not a dump"
# claim counts are endpoints with "yes"; *_unknown counts those the dump cannot tell
COLUMNS = ["path", "kind", "status", "error", "kernel_release", "build_id", "crash_time", "panic",
           "capture_kernel", "crash_dump", "capture_log", "endpoints", "could_dma", "dma_after_crash",
           "hit_capture_kernel", "stopped_by_reset", "faults", "post_crash_completions", "ports_reset",
           "dma_after_crash_devices", "could_dma_unknown", "dma_after_crash_unknown", "hit_capture_kernel_unknown",
           "stopped_by_reset_unknown", "unreadable", "seconds"]
FORMATS = ("csv", "json", "jsonl", "parquet")


def find_dumps(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given directly, and under directories every regular file that looks like a dump
    (kdump-compressed, flattened, or an ELF core), sorted.

    :raises InputError: a path that does not exist
    :raises AccessError: a directory (or a file in one) that cannot be read, rather than
        silently leaving its dumps out
    """
    from dumpkit.errors import AccessError, InputError

    out: list[Path] = []
    for p in map(Path, paths):
        try:
            st = p.stat()
        except FileNotFoundError:
            raise InputError(f"{p}: no such file or directory", "check the path") from None
        except PermissionError:
            raise AccessError(f"{p}: permission denied", "run as a user who can read it") from None
        if not stat.S_ISDIR(st.st_mode):
            out.append(p)       # checked by its worker: a bad file gets an error row
            continue

        def denied(e: OSError) -> None:
            raise AccessError(f"{e.filename}: permission denied, its dumps would be left out",
                              "run as a user who can read it, or pass the readable directories")

        found = []
        for root, dirs, files in os.walk(p, onerror=denied):
            dirs.sort()
            for name in files:
                f = Path(root) / name
                if _looks_like_dump(f):
                    found.append(f)
        out += sorted(found)
    return out


def _looks_like_dump(path: Path) -> bool:
    from dumpkit.errors import AccessError

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False         # FIFOs, sockets, devices: opening them could block
        with open(path, "rb") as f:
            head = f.read(18)
    except PermissionError:
        raise AccessError(f"{path}: permission denied, it cannot be checked for a dump",
                          "run as a user who can read it, or pass the readable files") from None
    except OSError:
        return False
    if head.startswith(b"\x7fELF"):
        return len(head) >= 18 and int.from_bytes(head[16:18], "little") == 4  # ET_CORE
    return any(head.startswith(m) for m in DUMP_MAGICS)


def analyse(path: str, debuginfo: str | Sequence[str] | None = None, debuginfod: bool = False):
    """Open and judge one dump: (row, verdicts or None for a capture-state dump, dump).

    :raises DumpkitError: bad input, no debug info, unreadable kernel data
    """
    import dumpkit
    try:
        from dumpkit.kdump.capture import find_capture_logs
    except ImportError:         # before the finder moved to dumpkit.kdump
        from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.verdict import judge

    start = time.monotonic()
    dump = dumpkit.open(path, debuginfo=debuginfo, **({"debuginfod": True} if debuginfod else {}))
    info, kd = dump.info, dump.kdump()
    row = {
        "path": str(path), "kind": KIND_CAPTURE if kd.capture_kernel else KIND_CRASH,
        "status": "ok", "error": None,
        "kernel_release": info.kernel_release, "build_id": info.build_id,
        "crash_time": info.crash_time.isoformat() if info.crash_time else None,
        "panic": info.panic_message, "capture_kernel": kd.capture_kernel,
    }
    if kd.capture_kernel:
        row["seconds"] = round(time.monotonic() - start, 3)
        return row, None, dump
    logs = find_capture_logs(dump.path)
    v = judge(dump, logs)
    row.update(verdict_counts(v))
    row.update({"capture_log": ",".join(str(x) for x in logs) or None,
                "seconds": round(time.monotonic() - start, 3)})
    return row, v, dump


def verdict_counts(v) -> dict:
    """A dump's row from its verdicts: per claim the endpoints with "yes" and those the
    dump cannot tell, never an unknown counted as "no" or 0. ``post_crash_completions``
    is None when any decoded device's rings could not be read; ``unreadable`` names what
    the dump lost."""
    eps = v.endpoints
    row = {"endpoints": len(eps), "faults": sum(e.faults for e in eps), "ports_reset": len(v.ports_reset),
           "dma_after_crash_devices": ",".join(f"{e.bdf}[{e.driver}]" for e in eps if e.did_dma_after_crash.value)}
    for column, claim in (("could_dma", "could_dma"), ("dma_after_crash", "did_dma_after_crash"),
                          ("hit_capture_kernel", "hit_capture_kernel"), ("stopped_by_reset", "stopped_by_reset")):
        claims = [getattr(e, claim) for e in eps]
        row[column] = sum(1 for c in claims if c.value)
        row[column + "_unknown"] = sum(1 for c in claims if c.value is None and c.applicable)
    lost = any(e.unreadable or e.ring_status == "error" or (e.decoder and e.did_dma_after_crash.value is None)
               for e in eps)
    row["post_crash_completions"] = None if lost else sum(e.post_crash_completions or 0 for e in eps)
    row["unreadable"] = "; ".join(v.errors) or None
    return row


def triage_one(path: str, debuginfo: str | Sequence[str] | None = None, debuginfod: bool = False) -> dict:
    """Analyse one dump into one row (raises DumpkitError on bad input).

    A capture-kernel dump is not judged as a crash: its row has kind "capture-state dump"
    and no endpoint counts.
    """
    return analyse(path, debuginfo, debuginfod)[0]


def _worker(path: str, debuginfo, debuginfod: bool, conn) -> None:
    import signal

    # Ctrl-C goes to the whole process group: the parent decides, workers just get killed;
    # the parent's SIGTERM handler (finish the output) is not theirs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from dumpkit.errors import DumpkitError
    from dumpkit.target.corefile import NotADump

    try:
        row = triage_one(path, debuginfo, debuginfod)
    except NotADump as e:
        row = not_a_dump_row(path, e)
    except DumpkitError as e:
        row = {"path": path, "status": "error", "error": str(e)}
    except Exception as e:  # an analysis bug must not take the batch down
        row = {"path": path, "status": "error", "error": f"internal error: {type(e).__name__}: {e}"}
    conn.send(row)
    conn.close()


def not_a_dump_row(path, e: Exception) -> dict:
    """The row of a file that is no kernel dump: its own kind, so it is neither a crash nor
    lost among failed dumps."""
    return {"path": str(path), "kind": KIND_NOT_A_DUMP, "status": "error", "error": f"not a dump: {e}"}


def _context():
    """Workers are forked from a fresh server process, never from the caller: a caller that
    already opened a dump has drgn's OpenMP threads, and a child forked from it can hang."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dumpkit.triage", "dumpkit.verdict"])
    return ctx


def _error_row(path, error: str) -> dict:
    return {"path": str(path), "status": "error", "error": error}


def _row_ready(i: int, paths: list[Path], directory: list[Path], done: dict[int, dict],
               kinds: dict[int, str | None]) -> bool:
    """Whether dump ``i``'s finished row can go out: a crash's at once; a capture-state
    dump's once every dump of its directory has finished, naming the crash(es) there in
    its ``crash_dump``."""
    row = done.get(i)
    if row is None:
        return False
    if row.get("kind") != KIND_CAPTURE:
        return True
    siblings = [j for j in range(len(paths)) if j != i and directory[j] == directory[i]]
    if any(j not in kinds for j in siblings):
        return False
    crashes = list(dict.fromkeys(str(paths[j]) for j in siblings if kinds[j] == KIND_CRASH))
    row["crash_dump"] = ",".join(crashes) or None
    return True


def iter_triage(paths: Sequence[str | os.PathLike], jobs: int = 1, timeout: float = 300,
                debuginfo: str | Sequence[str] | None = None, progress: bool = False,
                debuginfod: bool = False, finished: list | None = None) -> Iterator[tuple[int, dict]]:
    """(index, row) for every dump, in input order, each as soon as it and every dump
    before it are done; a capture-state dump also waits for the other dumps of its
    directory so its row can name the crash dump there (``crash_dump``).

    :param finished: if given, rows that finished but were not yet yielded are appended to
        it (as (index, row)) when the iteration ends early (Ctrl-C, an exception, close())
    :param timeout: seconds per dump; a dump over it is killed and gets an error row
    """
    ctx = _context()
    paths = [Path(p) for p in paths]
    directory = [p.parent.resolve() for p in paths]
    pending = list(range(len(paths)))
    running: dict = {}
    done: dict[int, dict] = {}
    kinds: dict[int, str | None] = {}     # every finished dump's kind, also after its row is out
    next_out = 0

    def ready(i: int) -> bool:
        return _row_ready(i, paths, directory, done, kinds)

    try:
        while pending or running or next_out < len(paths):
            while pending and len(running) < max(1, jobs):
                i = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                sys.stdout.flush()      # a forked child must not inherit unwritten output
                sys.stderr.flush()
                proc = ctx.Process(target=_worker, args=(str(paths[i]), debuginfo, debuginfod, child),
                                   daemon=True)
                proc.start()
                child.close()
                running[i] = (proc, parent, time.monotonic())
            for i, (proc, conn, started) in list(running.items()):
                row = None
                if conn.poll():
                    try:
                        row = conn.recv()
                    except EOFError:
                        row = _error_row(paths[i], "worker exited without a result")
                    proc.join(5)
                elif not proc.is_alive():
                    row = _error_row(paths[i], f"worker died (exit code {proc.exitcode})")
                elif time.monotonic() - started > timeout:
                    proc.kill()
                    proc.join()
                    row = _error_row(paths[i], f"timed out after {timeout:g} s")
                if row is not None:
                    conn.close()
                    done[i] = {c: row.get(c) for c in COLUMNS}
                    kinds[i] = done[i].get("kind")
                    del running[i]
                    if progress:
                        print(f"\rtriage: {len(done)}/{len(paths)} done", end="", file=sys.stderr, flush=True)
            while next_out < len(paths) and ready(next_out):
                row = done.pop(next_out)
                next_out += 1
                yield next_out - 1, row
            if running:
                time.sleep(0.02)
        if progress:
            print(file=sys.stderr)
    finally:
        for proc, conn, _started in running.values():
            proc.kill()
            proc.join()
            conn.close()
        if finished is not None:
            for i in sorted(done):
                ready(i)        # fill crash_dump where it is already known
                finished.append((i, done[i]))


def iter_triage_cluster(paths: Sequence[str | os.PathLike], timeout: float = 300,
                        debuginfo: str | Sequence[str] | None = None, progress: bool = False,
                        debuginfod: bool = False, finished: list | None = None, *, workers: int | None = None,
                        scheduler: str | None = None, scheduler_file: str | None = None,
                        memory_limit: int | None = None, index=None) -> Iterator[tuple[int, dict]]:
    """:func:`iter_triage` on dask.distributed (:mod:`dumpkit.fleet.engine`): an embedded
    LocalCluster of ``workers`` single-threaded processes, or the cluster at ``scheduler``
    / ``scheduler_file``. Same rows, same order, same ``finished`` hand-over."""
    from dumpkit.fleet.engine import DEFAULT_MEMORY_LIMIT, connect, run_on_cluster

    paths = [Path(p) for p in paths]
    directory = [p.parent.resolve() for p in paths]
    memory_limit = memory_limit or DEFAULT_MEMORY_LIMIT
    done: dict[int, dict] = {}
    kinds: dict[int, str | None] = {}     # every finished dump's kind, also after its row is out
    next_out = 0

    def ready(i: int) -> bool:
        return _row_ready(i, paths, directory, done, kinds)

    try:
        with connect(scheduler, scheduler_file, workers, memory_limit) as client:
            results = run_on_cluster(client, paths, index=index, debuginfo=debuginfo, debuginfod=debuginfod,
                                     timeout=timeout, want_sha=False, progress=progress,
                                     memory_limit=memory_limit if not (scheduler or scheduler_file) else None)
            try:
                for i, result in results:
                    row = result["row"]
                    row["path"] = str(paths[i])
                    done[i] = {c: row.get(c) for c in COLUMNS}
                    kinds[i] = done[i].get("kind")
                    while next_out < len(paths) and ready(next_out):
                        out = done.pop(next_out)
                        next_out += 1
                        yield next_out - 1, out
            finally:
                results.close()
    finally:
        if finished is not None:
            for i in sorted(done):
                ready(i)
                finished.append((i, done[i]))


def triage(paths: list[Path], jobs: int = 1, timeout: float = 300, debuginfo: str | Sequence[str] | None = None,
           progress: bool = False, debuginfod: bool = False,
           on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Rows in input order; failures are rows with status "error" and a one-line reason.

    :param on_row: called with each row as soon as it is final (to stream it to disk)
    """
    rows = []
    for _i, row in iter_triage(paths, jobs, timeout, debuginfo, progress, debuginfod):
        if on_row is not None:
            on_row(row)
        rows.append(row)
    return rows


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that output can be written: its directory exists and is
    writable, it is not a directory, and it is none of the inputs.

    :raises OutputError: with what is wrong
    """
    from dumpkit.errors import OutputError

    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: directory {parent} does not exist", "create it first")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory", "give a file name")
    if out.exists():
        for p in inputs:
            try:
                if os.path.samefile(out, p):
                    raise OutputError(f"cannot write {out}: it is one of the inputs", "give another file name")
            except OSError:
                continue
        if not os.access(out, os.W_OK):
            raise OutputError(f"cannot write {out}: permission denied", "choose a writable location")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: directory {parent} is not writable", "choose a writable location")
    return out


def _plain(row: dict) -> dict:
    return {c: row.get(c) for c in COLUMNS}


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _regular_or_new(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


class OutputLock:
    """One writer per output file: an exclusive ``flock`` on ``.NAME.lock`` beside it,
    removed again when released (re-checked after locking, so that a run that locked a
    lock file just removed by the previous one tries again)."""

    def __init__(self, output: Path):
        import fcntl

        from dumpkit.errors import OutputError

        self.path = output.with_name(f".{output.name}.lock")
        for _ in range(8):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write {output}: {e.strerror}", "choose a writable location") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"cannot write {output}: another dumpkit run is writing it",
                                  "wait for that run, or give another output") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)
        raise OutputError(f"cannot write {output}: its lock file {self.path} keeps changing", "try again")

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


class RowWriter:
    """Writes triage rows as they come: CSV (header first), JSON (an array, closed at the
    end even after an interruption), JSON lines, or Parquet (written at the end from the
    rows kept in ``OUTPUT.partial.jsonl`` beside it, which stays if that fails).

    A file output is written to a temporary file beside it and renamed over it when
    closed, under an :class:`OutputLock`: a failed run leaves the output as it was, an
    interrupted one a complete file of the rows finished, and two runs never mix rows.

    :param output: a file, or None for stdout (not for parquet)
    :raises OutputError: the output cannot be created, or another run is writing it
    """

    def __init__(self, output: str | os.PathLike | None, fmt: str):
        from dumpkit.errors import OutputError, UsageError

        self.format = fmt
        self.output = Path(output) if output is not None else None
        self.rows: list[dict] = []
        self.partial: Path | None = None
        self._first = True
        self._lock: OutputLock | None = None
        self._tmp: Path | None = None
        if fmt == "parquet" and self.output is None:
            raise UsageError("--format parquet needs -o FILE", "give an output file")
        # a regular file (or a new one) is replaced whole at the end, through its links;
        # a device or FIFO given as the output (/dev/stdout, a pipe) is written directly
        real = Path(os.path.realpath(self.output)) if self.output is not None else None
        whole = real is not None and _regular_or_new(self.output)
        if whole:
            self.output = real
            self._lock = OutputLock(real)
        if fmt == "parquet":
            target = self.partial = self.output.with_name(self.output.name + ".partial.jsonl")
        elif whole:
            target = self._tmp = real.with_name(f".{real.name}.{os.getpid()}.tmp")
        else:
            target = self.output
        try:
            self._f = open(target, "w", newline="") if target is not None else sys.stdout
        except OSError as e:
            self._release()
            raise OutputError(f"cannot write {target}: {e.strerror}", "choose a writable location") from None
        self._guard(self._begin)

    def _release(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()

    def _guard(self, fn, *args) -> None:
        from dumpkit.errors import OutputError

        try:
            fn(*args)
            if not self._f.closed:
                self._f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            where = self.partial or self.output or "standard output"
            if self._f is not sys.stdout:
                try:
                    self._f.close()
                except OSError:
                    pass            # the disk is still full: what is written goes away below
            self._release()
            raise OutputError(f"writing {where} failed: {e.strerror}", "free space or choose another location") from None

    def _begin(self) -> None:
        if self.format == "csv":
            self._csv = csv.DictWriter(self._f, COLUMNS, extrasaction="ignore", lineterminator="\n")
            self._csv.writeheader()
        elif self.format == "json":
            self._f.write("[")

    def _write(self, row: dict) -> None:
        row = _plain(row)
        if self.format == "csv":
            self._csv.writerow(row)
        elif self.format == "json":
            self._f.write(("\n" if self._first else ",\n") + json.dumps(row, default=str))
        else:
            self._f.write(json.dumps(row, default=str) + "\n")
        self._first = False

    def write(self, row: dict) -> None:
        self.rows.append(row)
        self._guard(self._write, row)

    def close(self) -> None:
        """Finish the output with the rows written so far (also after an interruption)."""
        from dumpkit.errors import OutputError

        if self._f is None:
            return
        if self.format == "json":
            self._guard(self._f.write, "\n]\n")
        if self._f is not sys.stdout:
            self._guard(self._f.close)
        self._f = None
        try:
            if self.format == "parquet":
                self._write_parquet()
            elif self._tmp is not None:
                try:
                    os.replace(self._tmp, self.output)
                except OSError as e:
                    raise OutputError(f"writing {self.output} failed: {e.strerror}",
                                      "choose a writable location") from None
        finally:
            self._release()

    def _write_parquet(self) -> None:
        import pandas as pd

        from dumpkit.errors import OutputError

        frame = pd.DataFrame([{c: _finite(v) for c, v in _plain(r).items()} for r in self.rows], columns=COLUMNS)
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.output)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"writing {self.output} failed: {e.strerror}; the rows are in {self.partial}",
                              "free space or choose another location") from None
        self.partial.unlink(missing_ok=True)

    @property
    def where(self) -> str:
        return str(self.output) if self.output is not None else "standard output"


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))
