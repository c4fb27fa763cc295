"""Triage on dask.distributed: an embedded LocalCluster of single-threaded worker
processes (a drgn Program is never shared between threads), or an existing cluster
(``tcp://HOST:PORT`` or a scheduler file). Workers open dumps by path: every worker must
see the dumps (and the debug trees) under the same paths as the client.

Per dump: a time limit (the task reports its start; a task over the limit is cancelled
and its worker restarted, since a thread cannot be stopped) and a memory limit (the
nanny restarts a worker over it). A worker that dies is replaced by its nanny and its
dump retried once (``distributed.scheduler.allowed-failures`` = 1 on the embedded
scheduler), then reported as an error row. Nothing of one dump costs another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["DEFAULT_MEMORY_LIMIT", "connect", "default_workers", "run_on_cluster"]

DEFAULT_MEMORY_LIMIT = 4 << 30
START_TOPIC = "dumpkit-triage-start"
LOST_SCHEDULER_S = 30
QUIET_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


def _task(token: int, analyse, path: str, index, debuginfo, debuginfod: bool, skip_shas, want_sha: bool) -> dict:
    from distributed import get_worker

    try:
        w = get_worker()
        w.log_event(START_TOPIC, {"token": token, "worker": w.address})
    except ValueError:
        pass
    return analyse(path, index, debuginfo, debuginfod, skip_shas, want_sha)


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def default_workers(memory_limit: int = DEFAULT_MEMORY_LIMIT) -> int:
    """One worker per core, as many as fit in 80 % of the memory at ``memory_limit`` each."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, int(_total_memory() * 0.8) // max(1, memory_limit)))


def _quiet() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def connect(scheduler: str | None = None, scheduler_file: str | None = None, workers: int | None = None,
            memory_limit: int = DEFAULT_MEMORY_LIMIT):
    """A dask Client: on the given cluster, or on an embedded LocalCluster of ``workers``
    single-threaded processes on 127.0.0.1 (closed on exit)."""
    import dask
    from distributed import Client, LocalCluster

    _quiet()
    if scheduler or scheduler_file:
        client = Client(scheduler, scheduler_file=scheduler_file, timeout="30s") if scheduler else \
            Client(scheduler_file=scheduler_file, timeout="30s")
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        return
    config = {"distributed.scheduler.allowed-failures": 1,
              "distributed.scheduler.worker-saturation": 1.0,
              "distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
              "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": 0.95,
              "distributed.worker.daemon": False,
              "distributed.admin.system-monitor.gil.enabled": False,
              "logging.distributed": "critical"}
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=workers or default_workers(memory_limit), threads_per_worker=1,
                               processes=True, memory_limit=memory_limit, host="127.0.0.1",
                               dashboard_address=":0", silence_logs=logging.CRITICAL,
                               preload=["dumpkit.fleet.preload"])
        client = Client(cluster)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="dump", desc="triage", file=sys.stderr, dynamic_ncols=True, leave=False)


def run_on_cluster(client, paths: Sequence[str | os.PathLike], analyse, *, index=None, debuginfo=None,
                   debuginfod: bool = False, timeout: float = 300, skip_shas=frozenset(), want_sha: bool = True,
                   progress: bool = False, memory_limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(index, {"row", "endpoints", "skipped"}) for every dump, as each finishes (any order).

    :param analyse: what a worker runs per dump: ``analyse(path, index, debuginfo,
        debuginfod, skip_shas, want_sha) -> {"row", "endpoints", "skipped"}`` (triage's
        :func:`dumpkit.fleet.rows.analyse_for_fleet`); the engine only runs it

    A dump over ``timeout`` seconds (counted from the moment its task started on a worker)
    is cancelled, its worker restarted, and its row says "timed out". A dump whose worker
    died twice is reported with that reason. Closing the generator cancels what is left.
    """
    paths = [str(p) for p in paths]
    started: dict[int, tuple[float, str]] = {}

    def on_start(event) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        started.setdefault(msg["token"], (time.monotonic(), msg["worker"]))

    client.subscribe_topic(START_TOPIC, on_start)
    skip = frozenset(skip_shas)
    if index is not None:
        [index_f] = client.scatter([index], broadcast=True, hash=False)
    else:
        index_f = None
    futures = {client.submit(_task, i, analyse, p, index_f, debuginfo, debuginfod, skip, want_sha, pure=False,
                             key=f"dumpkit-triage-{i}-{os.urandom(4).hex()}"): i
               for i, p in enumerate(paths)}
    pending = dict(futures)
    bar = _progress(len(paths), progress)
    limit = f" of {memory_limit / (1 << 30):g} GiB" if memory_limit else ""
    lost = None
    try:
        while pending:
            now = time.monotonic()
            finished = []
            for fut, i in list(pending.items()):
                result = _outcome(client, fut, paths[i], started.get(i), now, timeout, limit)
                if result is not None:
                    finished.append((i, result))
                    del pending[fut]
            for i, result in finished:
                if bar is not None:
                    bar.set_postfix(running=sum(1 for j in started if j in pending.values()), refresh=False)
                    bar.update(1)
                yield i, result
            if pending and not finished:
                if client.status != "running":
                    lost = lost or now
                    if now - lost > LOST_SCHEDULER_S:
                        from dumpkit.errors import DumpkitError

                        raise DumpkitError(f"lost the dask scheduler ({client.status} for {LOST_SCHEDULER_S} s) "
                                           f"with {len(pending)} dumps left",
                                           "the finished rows are kept; run again to do the rest")
                else:
                    lost = None
                time.sleep(0.05)
    finally:
        if bar is not None:
            bar.close()
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(list(pending))
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(START_TOPIC)


def _outcome(client, fut, path: str, start: tuple[float, str] | None, now: float, timeout: float,
             limit: str) -> dict | None:
    """The result of one dump's task once it is over (finished, failed, cancelled, or over
    its time limit, in which case it is cancelled and its worker restarted); None while
    it runs."""
    from distributed import KilledWorker

    if fut.status == "finished":
        try:
            return fut.result()
        except Exception as e:
            return _error(path, f"internal error: {type(e).__name__}: {e}")
    if fut.status == "error":
        exc = fut.exception()
        if isinstance(exc, KilledWorker):
            return _error(path, f"its worker process died twice while analysing it (over the memory limit{limit}, "
                                "or a crash); retried once")
        return _error(path, f"internal error: {type(exc).__name__}: {exc}")
    if fut.status == "cancelled":
        return _error(path, "cancelled by the cluster")
    if start is not None and now - start[0] > timeout:
        fut.cancel()
        with contextlib.suppress(Exception):
            client.restart_workers([start[1]], raise_for_error=False)
        return _error(path, f"timed out after {timeout:g} s")
    return None


def _error(path: str, reason: str) -> dict:
    return {"row": {"path": path, "directory": str(Path(path).parent.resolve()), "status": "error",
                    "error": reason, "reason": reason},
            "endpoints": [], "skipped": False}


def parse_memory(text: str) -> int:
    """``4GiB``, ``512MB``, ``2G``, or bytes: for ``--memory-limit``."""
    import argparse
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 4GiB, 512MB)")
    num, unit, binary = float(m.group(1)), m.group(2).lower(), m.group(3)
    base = 1024 if binary or unit and not text.strip().lower().endswith("b") else 1000
    value = int(num * base ** "_kmgt".index(unit or "_")) if unit else int(num)
    if value < 64 << 20:
        raise argparse.ArgumentTypeError(f"{text!r}: a memory limit under 64 MiB cannot open a dump")
    return value
