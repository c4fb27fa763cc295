"""Opening what dumpkit analyses: vmcores, /proc/kcore and live QEMU guests."""

from dumpkit.target.dump import Dump, DumpInfo
from dumpkit.target.open import open_target

__all__ = ["Dump", "DumpInfo", "open_target"]
