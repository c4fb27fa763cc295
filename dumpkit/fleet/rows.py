"""Triage on the cluster: one dump's rows for the fleet dataset (the dumps table's row and
one endpoints row per endpoint, :func:`analyse_for_fleet`), computed on whichever process
the cluster engine (:mod:`dumpkit.fleet.engine`) runs it, and triage's rows of many dumps
from the cluster in the fork engine's order (:func:`iter_triage_cluster`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dumpkit.errors import DumpkitError
from dumpkit.files import file_sha256
from dumpkit.fleet.debugindex import dump_identity
from dumpkit.fleet.engine import DEFAULT_MEMORY_LIMIT, connect, run_on_cluster
from dumpkit.target.corefile import NotADump, inspect_core_file
from dumpkit.triage.local import RowOrder
from dumpkit.triage.rows import analyse, not_a_dump_row
from dumpkit.verdict.claims import CLAIMS

__all__ = ["analyse_for_fleet", "endpoint_rows", "iter_triage_cluster"]


def endpoint_rows(verdicts) -> list[dict]:
    """One dataset row per endpoint: its facts, and per claim its value, evidence and
    sources (and whether it applies, for the claims whose spec keeps that)."""
    out = []
    for e in verdicts.endpoints:
        row = {"bdf": e.bdf, "name": e.name, "driver": e.driver,
               "vendor_device": f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None
               else None,
               "post_crash_completions": e.post_crash_completions, "faults": e.faults, "decoder": e.decoder,
               "reset_ports": ",".join(e.reset_ports) or None, "summary": e.summary,
               "dma_owner": e.dma_owner}
        for spec in CLAIMS:
            c = spec.of(e)
            row[spec.name], row[spec.name + "_evidence"] = c.value, "; ".join(c.evidence)
            row[spec.name + "_sources"] = "; ".join(c.sources) or None
            if spec.fleet_applicable:
                row[spec.name + "_applicable"] = c.applicable
        out.append(row)
    return out


def analyse_for_fleet(path: str, index=None, debuginfo: Sequence[str] | None = None, debuginfod: bool = False,
                      skip_shas: frozenset = frozenset(), want_sha: bool = True) -> dict:
    """One dump, on whatever process runs it: {"row", "endpoints", "skipped"}.

    The kernel's build-id is read from the dump's VMCOREINFO and looked up in ``index``
    (a :class:`DebugIndex`); its vmlinux and module directory are what the dump is opened
    with. Not in the index: ``debuginfo`` if given, else dumpkit's standard search. Never
    raises for a bad dump: the row says status "error" and why.
    """
    start = time.monotonic()
    row: dict = {"path": str(path), "directory": str(Path(path).parent.resolve()), "status": "ok",
                 "worker": f"{os.uname().nodename}:{os.getpid()}"}
    endpoints: list[dict] = []
    try:
        inspect_core_file(path)         # refuses FIFOs, truncated and foreign files before reading them
        st = os.stat(path)
        row.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if want_sha:
            row["dump_sha256"] = file_sha256(path)
            if row["dump_sha256"] in skip_shas:
                return {"row": row, "endpoints": [], "skipped": True}
        release, bid = dump_identity(path)
        row.update(kernel_release=release, build_id=bid)
        kernel = index.lookup(bid) if index is not None else None
        use = kernel.paths() if kernel is not None else (list(debuginfo) if debuginfo else None)
        if kernel is None and index is not None:
            use = None      # the index had the user's trees: dumpkit's own search and the manifests
        base, verdicts, dump = analyse(path, use, debuginfod)
        row.update(base)
        row["debug_file"] = dump.debug.path
        if verdicts is not None:
            endpoints = endpoint_rows(verdicts)
            row["capture_log_match"] = ",".join(f"{Path(p).name}:{s}" for p, s in verdicts.capture_checks.items()) \
                or None
            row["warnings"] = "; ".join(verdicts.warnings + verdicts.errors) or None
            row["iommu"] = verdicts.iommu
    except NotADump as e:
        row.update(not_a_dump_row(path, e))
    except DumpkitError as e:
        row.update(status="error", error=str(e))
    except Exception as e:  # an analysis bug must not take the batch down
        row.update(status="error", error=f"internal error: {type(e).__name__}: {e}")
    row["reason"] = row.get("error")
    row["seconds"] = round(time.monotonic() - start, 3)
    return {"row": row, "endpoints": endpoints, "skipped": False}


def iter_triage_cluster(paths: Sequence[str | os.PathLike], timeout: float = 300,
                        debuginfo: str | Sequence[str] | None = None, progress: bool = False,
                        debuginfod: bool = False, finished: list | None = None, *, workers: int | None = None,
                        scheduler: str | None = None, scheduler_file: str | None = None,
                        memory_limit: int | None = None, index=None) -> Iterator[tuple[int, dict]]:
    """:func:`dumpkit.triage.iter_triage` on dask.distributed (:mod:`dumpkit.fleet.engine`): an embedded
    LocalCluster of ``workers`` single-threaded processes, or the cluster at ``scheduler``
    / ``scheduler_file``. Same rows, same order, same ``finished`` hand-over."""
    order = RowOrder(paths)
    paths = order.paths
    memory_limit = memory_limit or DEFAULT_MEMORY_LIMIT
    try:
        with connect(scheduler, scheduler_file, workers, memory_limit) as client:
            results = run_on_cluster(client, paths, analyse_for_fleet, index=index, debuginfo=debuginfo,
                                     debuginfod=debuginfod,
                                     timeout=timeout, want_sha=False, progress=progress,
                                     memory_limit=memory_limit if not (scheduler or scheduler_file) else None)
            try:
                for i, result in results:
                    row = result["row"]
                    row["path"] = str(paths[i])
                    order.finish(i, row)
                    yield from order.ready_rows()
            finally:
                results.close()
    finally:
        order.hand_over(finished)
