"""The fork engine (one forked process per dump, a time limit each) and the ordering of
rows (:class:`RowOrder`) shared with triage on the cluster (:mod:`dumpkit.fleet.rows`)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from dumpkit.triage.rows import COLUMNS, KIND_CAPTURE, KIND_CRASH, _error_row, not_a_dump_row, triage_one

__all__ = ["RowOrder", "default_jobs", "iter_triage", "triage"]

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


def _context():
    """Workers are forked from a fresh server process, never from the caller: a caller that
    already opened a dump has drgn's OpenMP threads, and a child forked from it can hang."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dumpkit.triage", "dumpkit.verdict"])
    return ctx


class RowOrder:
    """The finished rows of a batch and the order they go out in (both engines): input
    order, each as soon as it and every dump before it are done; a capture-state dump's
    row once every dump of its directory has finished, naming the crash(es) there in its
    ``crash_dump``."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]
        self.directory = [p.parent.resolve() for p in self.paths]
        self.done: dict[int, dict] = {}
        self.kinds: dict[int, str | None] = {}     # every finished dump's kind, also after its row is out
        self.next_out = 0

    def finish(self, i: int, row: dict) -> None:
        """Dump ``i`` is over: its row, in the table's columns."""
        self.done[i] = {c: row.get(c) for c in COLUMNS}
        self.kinds[i] = self.done[i].get("kind")

    def ready(self, i: int) -> bool:
        """Whether dump ``i``'s finished row can go out (filling its ``crash_dump``)."""
        row = self.done.get(i)
        if row is None:
            return False
        if row.get("kind") != KIND_CAPTURE:
            return True
        siblings = [j for j in range(len(self.paths)) if j != i and self.directory[j] == self.directory[i]]
        if any(j not in self.kinds for j in siblings):
            return False
        crashes = list(dict.fromkeys(str(self.paths[j]) for j in siblings if self.kinds[j] == KIND_CRASH))
        row["crash_dump"] = ",".join(crashes) or None
        return True

    def ready_rows(self) -> Iterator[tuple[int, dict]]:
        """(index, row) of the rows that can go out now, in input order."""
        while self.next_out < len(self.paths) and self.ready(self.next_out):
            row = self.done.pop(self.next_out)
            self.next_out += 1
            yield self.next_out - 1, row

    def hand_over(self, finished: list | None) -> None:
        """Rows finished but not yielded, appended to ``finished`` (an early end)."""
        if finished is not None:
            for i in sorted(self.done):
                self.ready(i)        # fill crash_dump where it is already known
                finished.append((i, self.done[i]))


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
    order = RowOrder(paths)
    paths = order.paths
    pending = list(range(len(paths)))
    running: dict = {}

    try:
        while pending or running or order.next_out < len(paths):
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
                    order.finish(i, row)
                    del running[i]
                    if progress:
                        print(f"\rtriage: {len(order.kinds)}/{len(paths)} done", end="", file=sys.stderr,
                              flush=True)
            yield from order.ready_rows()
            if running:
                time.sleep(0.02)
        if progress:
            print(file=sys.stderr)
    finally:
        for proc, conn, _started in running.values():
            proc.kill()
            proc.join()
            conn.close()
        order.hand_over(finished)


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


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))
