"""What triage's two ways of writing share (rows as they come, :mod:`dumpkit.cli.triage`;
the fleet dataset, :mod:`dumpkit.cli.dataset`): the debug-file index the dumps are opened
with, and the closing counts and exit code."""

from __future__ import annotations

import os
import sys

from dumpkit.errors import DumpkitError


def summary(rows: list[dict], progress: bool, done: str = "") -> int:
    """The counts on a terminal, one stderr line per failed dump (its row's ``error``: a
    fleet row's ``reason`` is the same text), and the exit code: 1 when any failed."""
    from dumpkit.triage import KIND_CAPTURE

    failed = [r for r in rows if r["status"] != "ok"]
    if progress:
        captures = sum(1 for r in rows if r.get("kind") == KIND_CAPTURE)
        print(f"triage: {len(rows) - captures - len(failed)} crashes, {captures} capture-state dumps, "
              f"{len(failed)} failed{done}", file=sys.stderr)
    for r in failed:
        print(f"dumpkit: {r['path']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def debug_index(args):
    """Debug files by build-id under --debuginfo trees and /usr/lib/debug: each dump is
    opened with its own kernel's vmlinux and module directory."""
    from dumpkit.fleet.debugindex import DebugIndex

    for p in args.debuginfo or []:
        if not os.path.exists(p):
            raise DumpkitError(f"debug info path {p} does not exist",
                               "pass a vmlinux, module debug files or an unpacked debug package")
    return DebugIndex.build(args.debuginfo or [])
