"""Read a VFIO-owned PCI function's state from the crashed kernel: who has it open, its
IOMMU group and container, and the DMA mappings its owner made.

All the structures are defined in C files of ``drivers/vfio/`` (``vfio_pci_core.c``,
``vfio_main.c``/``group.c``, ``vfio_iommu_type1.c``): on a distribution kernel where VFIO
is a module, reading them needs the modules' debug info. Without it the owner is still
named by its driver and every other field is "unknown" with that reason.

Layout history (each probe is made once per program, through
:func:`dumpkit.kernel.has_member`):

- v5.15 split vfio-pci into ``vfio_pci_core``: ``struct vfio_pci_core_device`` (first
  member ``struct vfio_device vdev``) is the function's driver data; ``vfio_device``
  gained ``open_count`` in the same release.
- v6.2 added ``vfio_device.iommufd_device`` (devices bound through iommufd); v6.6 made
  the group path optional (``vfio_device.group`` only with CONFIG_VFIO_GROUP).
- ``struct vfio_dma`` (type1 container) has kept ``iova``/``vaddr``/``size``/``prot``/
  ``task`` since v3.6.
"""

from __future__ import annotations

import re

import drgn
from drgn.helpers.linux.rbtree import rb_first, rb_next

from dumpkit.kernel import device_iommu_group, driver_data, has_member
from dumpkit.vfio.iommufd import ioas_mappings
from dumpkit.vfio.kvm import vm_facts
from dumpkit.vfio.model import VfioMapping, VfioOwner, process_of

__all__ = ["is_vfio_driver", "vfio_owner", "MAX_MAPPINGS"]

# vfio-pci and its vendor variants (mlx5-vfio-pci, hisi-acc-vfio-pci, ...)
VFIO_DRIVER = re.compile(r"(?:[\w-]+-)?vfio[-_]pci")
# type1 refuses more than its dma_entry_limit (default 65535) mappings: a longer tree is damage
MAX_MAPPINGS = 1 << 20
IOMMU_READ, IOMMU_WRITE = 1, 2
PCI_COMMAND, PCI_COMMAND_MEMORY = 0x04, 0x2
# include/linux/iommu.h: the domain types are #defines, not an enum the debug info names
DOMAIN_TYPES = {0: "blocked", 1: "unmanaged", 3: "DMA", 4: "identity", 11: "DMA-FQ", 0x10: "SVA"}
GROUP_TYPES = {"VFIO_IOMMU": "iommu", "VFIO_EMULATED_IOMMU": "emulated", "VFIO_NO_IOMMU": "no-iommu"}
NO_DEBUG_INFO = ("the vfio modules' debug info is not loaded (struct vfio_pci_core_device, v5.15+, is defined "
                 "in vfio_pci_core; pass the vfio, vfio_pci_core and vfio_iommu_type1 .ko debug files with "
                 "--debuginfo)")
_TYPE_KEY = "dumpkit.vfio.core_type"


def is_vfio_driver(name: str | None) -> bool:
    """Whether ``name`` is vfio-pci or one of its variants."""
    return bool(name) and VFIO_DRIVER.fullmatch(name) is not None


def _core_type(prog: drgn.Program) -> str | None:
    """"struct vfio_pci_core_device *" when its debug info is loaded (cached per program)."""
    if _TYPE_KEY not in prog.cache:
        try:
            prog.type("struct vfio_pci_core_device")
            prog.cache[_TYPE_KEY] = "struct vfio_pci_core_device *"
        except LookupError:
            prog.cache[_TYPE_KEY] = None
    return prog.cache[_TYPE_KEY]


def _enum_name(value: drgn.Object) -> str | None:
    v = value.value_()
    return next((name for name, n in value.type_.enumerators or () if n == v), None)


def _domain_type(domain: drgn.Object) -> str | None:
    if not domain:
        return None
    t = domain.type.value_()
    return DOMAIN_TYPES.get(t, f"type {t:#x}")


def _iommu_group(owner: VfioOwner, group: drgn.Object) -> None:
    """The IOMMU group's number and its current and default domain types."""
    owner.group_id = group.id.value_()
    owner.group_domain = _domain_type(group.domain)
    owner.default_domain = _domain_type(group.default_domain)


def _mappings(iommu: drgn.Object) -> list[VfioMapping]:
    """The container's ``dma_list`` in IOVA order, bounded and loop-checked."""
    out, seen = [], set()
    node = rb_first(iommu.dma_list.address_of_())
    while node:
        addr = node.value_()
        if addr in seen or len(out) >= MAX_MAPPINGS:
            raise ValueError(f"the type1 container's dma_list loops or exceeds {MAX_MAPPINGS} entries "
                             f"at {addr:#x}: it is damaged")
        seen.add(addr)
        dma = drgn.container_of(node, "struct vfio_dma", "node")
        prot = dma.prot.value_()
        out.append(VfioMapping(dma.iova.value_(), dma.size.value_(), dma.vaddr.value_(), bool(prot & IOMMU_READ),
                               bool(prot & IOMMU_WRITE), process_of(dma.task), bool(dma.iommu_mapped),
                               dma.value_()))
        node = rb_next(node)
    return out


def _container(owner: VfioOwner, group: drgn.Object) -> None:
    container = group.container
    if not container:
        owner.container = None
        return
    ops = container.iommu_driver.ops if container.iommu_driver else None
    name = ops.name.string_().decode(errors="replace") if ops else None
    owner.sources.append(f"struct vfio_container @{container.value_():#x}")
    if name is None:
        owner.container = "none set"
        return
    if not name.startswith("vfio-iommu-type1"):
        owner.container = name
        owner.unknown["mappings"] = f"container backend {name} is not decoded"
        return
    try:
        iommu = drgn.cast("struct vfio_iommu *", container.iommu_data)
    except LookupError:
        owner.container = name
        owner.unknown["mappings"] = "struct vfio_iommu unknown: the vfio_iommu_type1 module's debug info is not loaded"
        return
    owner.container = f"{name} {'v2' if iommu.v2 else 'v1'}"
    owner.sources.append(f"struct vfio_iommu @{iommu.value_():#x} (dma_list)")
    owner.mappings = _mappings(iommu)


def _group(owner: VfioOwner, vdev: drgn.Object) -> None:
    prog = vdev.prog_
    if not has_member(prog, "struct vfio_device", "group"):
        owner.unknown["group"] = "struct vfio_device has no group (a kernel built without CONFIG_VFIO_GROUP, v6.6+)"
        return
    group = vdev.group
    if not group:
        owner.unknown["group"] = "the VFIO device has no group"
        return
    owner.sources.append(f"struct vfio_group @{group.value_():#x}")
    name = _enum_name(group.type)
    owner.group_type = GROUP_TYPES.get(name, name)
    if group.iommu_group:
        _iommu_group(owner, group.iommu_group)
    if has_member(prog, "struct vfio_group", "kvm") and group.kvm and not owner.vm:
        _attach_vm(owner, group.kvm)
    try:
        _container(owner, group)
    except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
        owner.unknown["mappings"] = f"the container's mappings are unreadable: {e}"


def _iommufd(owner: VfioOwner, pdev: drgn.Object, idev: drgn.Object) -> None:
    """A device bound through iommufd: its IOMMU group from the device itself (the VFIO
    group, if the kernel has one, is not used on this path) and its IOAS's areas."""
    owner.container = "iommufd"
    owner.group_type = "iommu"
    group = device_iommu_group(pdev.dev)
    if group is not None:
        _iommu_group(owner, group)
    try:
        owner.mappings, sources, unknown = ioas_mappings(idev)
    except (drgn.FaultError, LookupError, ValueError, AttributeError, TypeError) as e:
        owner.unknown["mappings"] = f"the IOAS's areas are unreadable: {e}"
        return
    owner.sources += sources
    owner.unknown.update(unknown)


def _attach_vm(owner: VfioOwner, kvm: drgn.Object) -> None:
    """The VM the device is attached to: its VMM's pid and memory slots (dumpkit.vfio.kvm)."""
    vm = vm_facts(kvm)
    owner.vm, owner.vm_pid, owner.vm_slots = True, vm.pid, vm.slots
    owner.sources.append(f"struct kvm @{vm.address:#x}" + (" (memslots)" if vm.slots else ""))
    for name, why in vm.unknown.items():
        owner.unknown[f"vm_{name}"] = why


def _memory_enabled(core: drgn.Object) -> bool | None:
    # vconfig exists while the device is open (vfio_config_init); vfio-pci tracks only
    # Memory and I/O enable there (vfio_basic_config_write): Bus Master goes to the device
    if not core.vconfig:
        return None
    cmd = int.from_bytes(core.prog_.read(core.vconfig.value_() + PCI_COMMAND, 2), "little")
    return bool(cmd & PCI_COMMAND_MEMORY)


def vfio_owner(pdev: drgn.Object, bdf: str, driver: str) -> VfioOwner:
    """What the kernel knew of a VFIO-owned function. Never raises on unreadable or
    missing state: each part that could not be read is in ``unknown`` with the reason.

    :param pdev: its ``struct pci_dev *``
    :param bdf: its name ("0000:01:00.0")
    :param driver: the bound driver's name (see :func:`is_vfio_driver`)
    """
    owner = VfioOwner(bdf, driver)
    prog = pdev.prog_
    core_type = _core_type(prog)
    if core_type is None:
        owner.unknown["vfio"] = NO_DEBUG_INFO
        return owner
    try:
        core = driver_data(pdev.dev, core_type)
        if core is None:
            owner.unknown["vfio"] = f"{driver} left no driver data"
            return owner
        owner.device_address = core.value_()
        owner.sources.append(f"struct vfio_pci_core_device {bdf} @{core.value_():#x}")
        vdev = core.vdev
        if has_member(prog, "struct vfio_device", "open_count"):
            owner.open_count = vdev.open_count.value_()
        else:
            owner.unknown["open_count"] = "struct vfio_device has no open_count (before v5.15)"
        if has_member(prog, "struct vfio_device", "kvm") and vdev.kvm:
            _attach_vm(owner, vdev.kvm)
        owner.memory_enabled = _memory_enabled(core)
        if has_member(prog, "struct vfio_device", "iommufd_device") and vdev.iommufd_device:
            _iommufd(owner, pdev, vdev.iommufd_device)
            return owner
        _group(owner, vdev)
    except (drgn.FaultError, LookupError, ValueError, AttributeError, TypeError) as e:
        owner.unknown.setdefault("vfio", f"VFIO state unreadable: {type(e).__name__}: {e}")
    return owner
