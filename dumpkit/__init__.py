"""dumpkit: which PCIe endpoints were still doing DMA when the kernel died."""

from dumpkit.errors import DumpkitError
from dumpkit.target import Dump, DumpInfo, open_target

__all__ = ["Dump", "DumpInfo", "DumpkitError", "__version__", "open"]

__version__ = "0.1.0"

open = open_target
