"""Where the capture kernel's log is found beside a vmcore, under its usual names."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CAPTURE_LOG_NAMES", "find_capture_logs"]

CAPTURE_LOG_NAMES = ("capture-dmesg.txt", "vmcore-dmesg.txt", "kexec-dmesg.log")


def find_capture_logs(dump_path: Path | None) -> list[Path]:
    """Capture-kernel logs saved beside a vmcore under their usual names."""
    if dump_path is None:
        return []
    return [dump_path.parent / n for n in CAPTURE_LOG_NAMES if (dump_path.parent / n).is_file()]
