"""PCI functions owned through VFIO (devices passed through to VMs, userspace drivers):
who owned them, what memory they could write, and how that squares with the IOMMU's
own tables.

The kernel's software view of such a function says little: vfio-pci never sets
``pci_dev.is_busmaster`` (the owner's Command-register writes go to the device), and the
rings live in the owner's memory. What the kernel does keep is the VFIO device, its group
and container, and the container's DMA mappings; :mod:`dumpkit.vfio.collect` reads them,
:mod:`dumpkit.vfio.check` compares them with the IOMMU page-table walk.
"""

from dumpkit.vfio.collect import is_vfio_driver, vfio_owner
from dumpkit.vfio.model import Process, VfioMapping, VfioOwner

__all__ = ["Process", "VfioMapping", "VfioOwner", "is_vfio_driver", "vfio_owner"]
