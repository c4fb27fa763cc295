"""kdump state: is this a capture kernel, with reset_devices; was a crash kernel loaded."""

from dumpkit.kdump.collect import KdumpState, collect_kdump

__all__ = ["KdumpState", "collect_kdump"]
