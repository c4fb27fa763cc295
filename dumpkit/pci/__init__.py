"""The PCI tree with DMA-relevant state: collection (collect) and rendering (render)."""

from dumpkit.pci.collect import PciDevice, PciTree, collect_pci

__all__ = ["PciDevice", "PciTree", "collect_pci"]
