"""The driver model's view of a device: its name, driver, driver data, IOMMU group.

Every reader of ``struct device`` members outside a backend goes through these, so a
renamed member is followed in one place.
"""

from __future__ import annotations

import drgn

from dumpkit.kernel.layout import has_member

__all__ = ["device_driver", "device_driver_name", "device_iommu_group", "device_iommu_priv",
           "device_name", "driver_data", "iommu_group_id", "pci_driver_name",
           "pci_driver_override"]


def device_name(dev: drgn.Object) -> str:
    """``dev_name(dev)``: the device's kobject name ("0000:02:00.0" for a PCI function).

    :param dev: ``struct device`` or a pointer to one
    """
    return dev.kobj.name.string_().decode(errors="replace")


def device_driver(dev: drgn.Object) -> drgn.Object | None:
    """``dev->driver`` (``struct device_driver *``), or None when no driver is bound."""
    drv = dev.driver
    return drv if drv else None


def device_driver_name(dev: drgn.Object) -> str | None:
    """The bound driver's name (``dev->driver->name``), or None when none is bound."""
    drv = device_driver(dev)
    return drv.name.string_().decode(errors="replace") if drv is not None else None


def pci_driver_name(pdev: drgn.Object) -> str | None:
    """The name of the driver bound to a PCI function.

    ``struct pci_dev`` kept its own ``driver`` pointer until v5.16 ("PCI: Remove struct
    pci_dev->driver"); from then on only the embedded ``dev.driver`` says it.
    """
    if has_member(pdev.prog_, "struct pci_dev", "driver"):
        drv = pdev.driver
        return drv.name.string_().decode(errors="replace") if drv else None
    return device_driver_name(pdev.dev)


def pci_driver_override(pdev: drgn.Object) -> str | None:
    """The ``driver_override`` a PCI function was given (what vfio-pci users write), or None.

    It was ``pci_dev.driver_override`` (a string) for years; newer kernels keep it in the
    embedded ``struct device`` (reported for 7.0 and Debian's 6.12.117), as a string or as
    a structure whose ``name`` is the string: both shapes are read.
    """
    prog = pdev.prog_
    if has_member(prog, "struct pci_dev", "driver_override"):
        value = pdev.driver_override
    elif has_member(prog, "struct device", "driver_override"):
        value = pdev.dev.driver_override
        if has_member(prog, "struct device", "driver_override.name"):
            value = value.name
    else:
        return None
    return value.string_().decode(errors="replace") if value else None


def driver_data(dev: drgn.Object, type_name: str) -> drgn.Object | None:
    """``dev_get_drvdata(dev)`` cast to ``type_name`` (e.g. "struct net_device *"), or None
    when the driver left it NULL.

    :param dev: ``struct device`` (a PCI function's is ``pdev->dev``)
    """
    data = dev.driver_data
    return drgn.cast(type_name, data) if data else None


def device_iommu_group(dev: drgn.Object) -> drgn.Object | None:
    """``dev->iommu_group`` (``struct iommu_group *``), or None: no group, or a kernel
    built without IOMMU support (the member is absent then)."""
    if not has_member(dev.prog_, "struct device", "iommu_group"):
        return None
    group = dev.iommu_group
    return group if group else None


def iommu_group_id(dev: drgn.Object) -> int | None:
    """The number of the device's IOMMU group (``/sys/kernel/iommu_groups/N``), or None."""
    group = device_iommu_group(dev)
    return group.id.value_() if group is not None else None


def device_iommu_priv(dev: drgn.Object) -> drgn.Object | None:
    """The IOMMU driver's per-device data (``dev_iommu_priv_get()``), or None when unset.

    v5.8 ("iommu: Add private pointer to dev_iommu") moved it from x86's
    ``dev->archdata.iommu`` to ``dev->iommu->priv``.

    :raises LookupError: the kernel has neither member (built without IOMMU support)
    """
    prog = dev.prog_
    if has_member(prog, "struct device", "iommu.priv"):
        return dev.iommu.priv if dev.iommu and dev.iommu.priv else None
    if has_member(prog, "struct device", "archdata.iommu"):
        return dev.archdata.iommu if dev.archdata.iommu else None
    raise LookupError("struct device has neither iommu->priv nor archdata.iommu")



