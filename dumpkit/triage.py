"""Batch triage: many dumps, each in its own worker process with a time limit; one bad
dump gets an error row and never costs the others."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

__all__ = ["find_dumps", "triage_one", "triage"]

DUMP_MAGICS = (b"KDUMP   ", b"\x7fELF", b"makedumpfile\0")


def find_dumps(paths: list[str]) -> list[Path]:
    """Files given directly, and under directories every file that looks like a dump
    (kdump-compressed, flattened, or an ELF core)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and _looks_like_dump(f):
                    out.append(f)
        else:
            out.append(p)
    return out


def _looks_like_dump(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    if head.startswith(b"\x7fELF"):
        return len(head) >= 18 and int.from_bytes(head[16:18], "little") == 4  # ET_CORE
    return any(head.startswith(m) for m in DUMP_MAGICS)


def triage_one(path: str, debuginfo: str | None = None) -> dict:
    """Analyse one dump into one row (raises DumpkitError on bad input)."""
    import dumpkit
    from dumpkit.dmar.collect import find_capture_logs
    from dumpkit.verdict import judge

    start = time.monotonic()
    dump = dumpkit.open(path, debuginfo=debuginfo)
    info, kd = dump.info, dump.kdump()
    logs = find_capture_logs(dump.path) if not kd.capture_kernel else []
    v = judge(dump, logs)
    eps = v.endpoints
    return {
        "path": str(path), "status": "ok", "error": None,
        "kernel_release": info.kernel_release, "build_id": info.build_id,
        "crash_time": info.crash_time.isoformat() if info.crash_time else None,
        "panic": info.panic_message, "capture_kernel": kd.capture_kernel,
        "capture_log": ",".join(str(x) for x in logs) or None,
        "endpoints": len(eps),
        "could_dma": sum(1 for e in eps if e.could_dma.value),
        "dma_after_crash": sum(1 for e in eps if e.did_dma_after_crash.value),
        "hit_capture_kernel": sum(1 for e in eps if e.hit_capture_kernel.value),
        "stopped_by_reset": sum(1 for e in eps if e.stopped_by_reset.value),
        "faults": sum(e.faults for e in eps),
        "post_crash_completions": sum(e.post_crash_completions or 0 for e in eps),
        "ports_reset": len(v.ports_reset),
        "dma_after_crash_devices": ",".join(f"{e.bdf}[{e.driver}]" for e in eps if e.did_dma_after_crash.value),
        "seconds": round(time.monotonic() - start, 3),
    }


def _worker(path: str, debuginfo: str | None, conn) -> None:
    from dumpkit.errors import DumpkitError

    try:
        row = triage_one(path, debuginfo)
    except DumpkitError as e:
        row = {"path": path, "status": "error", "error": str(e)}
    except Exception as e:  # an analysis bug must not take the batch down
        row = {"path": path, "status": "error", "error": f"internal error: {type(e).__name__}: {e}"}
    conn.send(row)
    conn.close()


def triage(paths: list[Path], jobs: int = 1, timeout: float = 300, debuginfo: str | None = None,
           progress: bool = False) -> list[dict]:
    """Rows in input order; failures are rows with status "error" and a one-line reason."""
    ctx = mp.get_context("fork")
    pending = list(enumerate(paths))
    running: dict = {}
    rows: dict[int, dict] = {}
    while pending or running:
        while pending and len(running) < max(1, jobs):
            i, path = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(str(path), debuginfo, child), daemon=True)
            proc.start()
            child.close()
            running[i] = (proc, parent, time.monotonic(), path)
        for i, (proc, conn, started, path) in list(running.items()):
            row = None
            if conn.poll():
                try:
                    row = conn.recv()
                except EOFError:
                    row = {"path": str(path), "status": "error", "error": "worker exited without a result"}
                proc.join(5)
            elif not proc.is_alive():
                row = {"path": str(path), "status": "error",
                       "error": f"worker died (exit code {proc.exitcode})"}
            elif time.monotonic() - started > timeout:
                proc.kill()
                proc.join()
                row = {"path": str(path), "status": "error", "error": f"timed out after {timeout:.0f} s"}
            if row is not None:
                rows[i] = row
                del running[i]
                if progress:
                    print(f"\rtriage: {len(rows)}/{len(paths)} done", end="", file=sys.stderr, flush=True)
        time.sleep(0.02)
    if progress:
        print(file=sys.stderr)
    return [rows[i] for i in range(len(paths))]


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))
