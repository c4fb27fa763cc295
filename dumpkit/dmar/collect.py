"""The capture-log finder under its former name (``dumpkit.kdump.capture``)."""

from dumpkit.kdump.capture import CAPTURE_LOG_NAMES, find_capture_logs

__all__ = ["CAPTURE_LOG_NAMES", "find_capture_logs"]
