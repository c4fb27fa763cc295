"""One dump's triage row: what a file is (crash, capture-state dump, not a dump) and the
analysis that fills it (its columns: :mod:`dumpkit.triage.schema`)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from dumpkit.triage.schema import COLUMNS
from dumpkit.verdict.claims import CLAIMS

__all__ = ["COLUMNS", "DUMP_MAGICS", "FORMATS", "KIND_CAPTURE", "KIND_CRASH", "KIND_NOT_A_DUMP", "analyse", "find_dumps", "not_a_dump_row", "triage_one", "verdict_counts"]

DUMP_MAGICS = (b"KDUMP   ", b"\x7fELF", b"makedumpfile\0")


KIND_CRASH = "crash"


KIND_CAPTURE = "capture-state dump"


KIND_NOT_A_DUMP = "not a dump"


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
           "dma_after_crash_devices": ",".join(f"{e.bdf}[{e.driver}]" for e in eps if e.did_dma_after_crash.value),
           # functions a VM or userspace driver owned through VFIO: no kernel driver knew their DMA
           "assigned_devices": ",".join(f"{e.bdf}[{e.dma_owner}]" for e in eps if e.dma_owner) or None}
    for spec in CLAIMS:
        claims = [spec.of(e) for e in eps]
        row[spec.column] = sum(1 for c in claims if c.value)
        row[spec.unknown_column] = sum(1 for c in claims if c.value is None and c.applicable)
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


def not_a_dump_row(path, e: Exception) -> dict:
    """The row of a file that is no kernel dump: its own kind, so it is neither a crash nor
    lost among failed dumps."""
    return {"path": str(path), "kind": KIND_NOT_A_DUMP, "status": "error", "error": f"not a dump: {e}"}


def _error_row(path, error: str) -> dict:
    return {"path": str(path), "status": "error", "error": error}
