"""Accessors for the kernel structures dumpkit reads outside its IOMMU backends and
ring decoders: device names, drivers, IOMMU groups, kexec and crashkernel facts.

Each layout probe runs once per program and is cached in ``prog.cache`` (see
:mod:`dumpkit.kernel.layout`), with the kernel version that changed the layout cited
where it is made, as drgn's own helpers do. A renamed member is handled here, once.
"""

from dumpkit.kernel import kexec
from dumpkit.kernel.device import (device_driver, device_driver_name, device_iommu_group, device_iommu_priv,
                                   device_name, driver_data, iommu_group_id, pci_driver_name, pci_driver_override)
from dumpkit.kernel.layout import has_member, member_type

__all__ = ["device_driver", "device_driver_name", "device_iommu_group", "device_iommu_priv", "device_name",
           "driver_data", "has_member", "iommu_group_id", "kexec", "member_type", "pci_driver_name",
           "pci_driver_override"]
