"""dumpkit: which PCIe endpoints were still doing DMA when the kernel died."""

__all__ = ["__version__"]

__version__ = "0.1.0"
