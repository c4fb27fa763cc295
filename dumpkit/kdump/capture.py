"""Where a log is found beside a vmcore: the names each capture tool gives it.

| tool | dump | log beside it |
|---|---|---|
| dumpkit's factory | ``vmcore.*`` | ``capture-dmesg.txt`` (the capture kernel's own log) |
| RHEL/Fedora kdump | ``vmcore`` | ``vmcore-dmesg.txt`` (``-incomplete`` while saving) |
| Debian/Ubuntu kdump-tools | ``dump.STAMP`` | ``dmesg.STAMP`` (``makedumpfile --dump-dmesg``) |
| SUSE kdump | ``vmcore`` | ``dmesg.txt`` |
| makedumpfile by hand | any | ``NAME.dmesg``, ``NAME-dmesg.txt``, ``dmesg.NAME`` |

All but the first are the crashed kernel's own log (what ``makedumpfile --dump-dmesg``
extracts), which :func:`dumpkit.kdump.match.match_capture_log` recognises by its last
records; a capture kernel's log saved under any of these names is checked by its
``elfcorehdr=`` and memory map instead."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CAPTURE_LOG_NAMES", "find_capture_logs"]

# names that hold a log whatever the dump is called
CAPTURE_LOG_NAMES = ("capture-dmesg.txt", "vmcore-dmesg.txt", "vmcore-dmesg-incomplete.txt",
                     "kexec-dmesg.log", "dmesg.txt")


def _named_after(dump: Path) -> list[str]:
    """Log names derived from the dump's own name."""
    name = dump.name
    names = [f"{name}.dmesg", f"{name}-dmesg.txt", f"dmesg.{name}"]
    stem, dot, stamp = name.partition(".")
    if dot and stem in ("dump", "dump-incomplete") and stamp:
        names.insert(0, f"dmesg.{stamp}")         # kdump-tools: dump.STAMP -> dmesg.STAMP
    return names


def find_capture_logs(dump_path: Path | None) -> list[Path]:
    """Logs saved beside a vmcore under the names capture tools give them, each once,
    never the dump itself."""
    if dump_path is None:
        return []
    dump_path = Path(dump_path)
    out: list[Path] = []
    for name in (*CAPTURE_LOG_NAMES, *_named_after(dump_path)):
        p = dump_path.parent / name
        if p.name != dump_path.name and p not in out and p.is_file():
            out.append(p)
    return out
