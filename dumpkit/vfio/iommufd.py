"""A VFIO device bound through iommufd (the VFIO device cdev, v6.6+; iommufd itself v6.2+):
the IOAS it is attached to and that IOAS's areas, as the type1 container's mappings are
read in :mod:`dumpkit.vfio.collect`.

The chain, all defined in C files of ``drivers/iommu/iommufd/`` (built in or a module:
its debug info is needed either way):

``vfio_device.iommufd_device`` -> ``struct iommufd_device.igroup`` (``struct
iommufd_group``) -> ``hwpt``, or since v6.15 the ``hwpt`` of the ``struct iommufd_attach``
at PASID 0 (``IOMMU_NO_PASID``) of its ``pasid_attach`` xarray (``struct
iommufd_hw_pagetable``; a paging one is the
``common`` member of ``struct iommufd_hwpt_paging``, whose ``ioas`` is the IOAS) ->
``struct iommufd_ioas.iopt`` (``struct io_pagetable``) -> ``area_itree``: an interval
tree of ``struct iopt_area`` (``node.start``/``node.last``: the IOVA range;
``iommu_prot``; ``page_offset``, ``pages_node.start``: where in its pages the area
starts) -> ``struct iopt_pages`` (``uptr``: the user address of page 0;
``source_task``: the thread-group leader that pinned them).

Layout history (probes once per program, :func:`dumpkit.kernel.has_member`):

- v6.2 (iommufd merged): ``iommufd_group.hwpt``; ``iommufd_hw_pagetable.ioas``.
- v6.7 split paging page tables out (``struct iommufd_hwpt_paging`` with ``ioas``, the
  hw_pagetable its ``common`` member).
- v6.13 made ``iopt_pages`` memory either user or file backed (``iopt_pages.type``,
  ``uptr`` in a union with the file's ``start``); a file-backed area has no user address.
- v6.15 attached page tables per PASID (the PASID attach series, "iommufd/device: Replace
  idev->igroup->hwpt with pasid_attach"): ``iommufd_group.hwpt`` became the xarray
  ``pasid_attach`` of ``struct iommufd_attach`` (``hwpt``, ``device_array``); the page table
  the device's DMA without a PASID goes through is the one at ``IOMMU_NO_PASID`` (0).
- A group with neither member is a layout not decoded: the mappings are "unknown" naming it.
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.rbtree import rb_first, rb_next
from drgn.helpers.linux.xarray import xa_load

from dumpkit.kernel import has_member
from dumpkit.vfio.model import VfioMapping, process_of

__all__ = ["ioas_mappings", "MAX_AREAS"]

PAGE_SIZE = 4096
IOMMU_READ, IOMMU_WRITE = 1, 2
# IOMMUFD_DEFAULT_MAX_AREAS is not a limit the kernel has; a domain of more areas than
# this many is damage to us (a VM maps its RAM in a few areas)
MAX_AREAS = 1 << 20
# include/linux/iommu.h: the PASID of DMA that carries none
IOMMU_NO_PASID = 0


def _ioas(idev: drgn.Object) -> tuple[drgn.Object | None, str | None]:
    """The IOAS the device's group is attached to, or None and why."""
    prog = idev.prog_
    igroup = idev.igroup
    hwpt, why = _group_hwpt(igroup) if igroup else (None, None)
    if why:
        return None, why
    if hwpt is None or not hwpt:
        return None, "the device is bound to iommufd but attached to no page table"
    if has_member(prog, "struct iommufd_hw_pagetable", "ioas"):          # v6.2 .. v6.6
        return hwpt.ioas, None
    try:                                                                   # v6.7+
        paging = drgn.container_of(hwpt, "struct iommufd_hwpt_paging", "common")
    except LookupError:
        return None, "neither iommufd_hw_pagetable.ioas nor struct iommufd_hwpt_paging is known"
    name = _obj_type(hwpt)
    if name is not None and name != "IOMMUFD_OBJ_HWPT_PAGING":
        return None, f"attached to a {name} page table (nested or not a paging one): its IOVAs are not an IOAS's"
    return paging.ioas, None


def _group_hwpt(igroup: drgn.Object) -> tuple[drgn.Object | None, str | None]:
    """The page table the group's DMA without a PASID goes through (None: none attached),
    or None and why the layout is not decoded."""
    prog = igroup.prog_
    if has_member(prog, "struct iommufd_group", "hwpt"):                 # v6.2 .. v6.14
        return igroup.hwpt, None
    if not has_member(prog, "struct iommufd_group", "pasid_attach"):
        return None, "struct iommufd_group has neither hwpt nor pasid_attach (an attach layout not decoded)"
    entry = xa_load(igroup.pasid_attach.address_of_(), IOMMU_NO_PASID)    # v6.15+
    if not entry:
        return None, None
    try:
        attach = drgn.cast(prog.type("struct iommufd_attach *"), entry)
    except LookupError:
        return None, "struct iommufd_attach is not in the debug info (the iommufd module's is needed)"
    return attach.hwpt, None


def _obj_type(hwpt: drgn.Object) -> str | None:
    t = hwpt.obj.type
    v = t.value_()
    return next((n for n, val in t.type_.enumerators or () if val == v), None)


def _user_address(pages: drgn.Object) -> int | None:
    prog = pages.prog_
    if has_member(prog, "struct iopt_pages", "type"):                      # v6.13: user or file backed
        t = pages.type
        name = next((n for n, val in t.type_.enumerators or () if val == t.value_()), None)
        if name != "IOPT_ADDRESS_USER":
            return None
    return pages.uptr.value_()


def ioas_mappings(idev: drgn.Object) -> tuple[list[VfioMapping], list[str], dict[str, str]]:
    """The areas of the IOAS a ``struct iommufd_device *`` is attached to, in IOVA order,
    as mappings (bounded, loop-checked); the objects read; what is unknown and why."""
    sources = [f"struct iommufd_device @{idev.value_():#x}"]
    ioas, why = _ioas(idev)
    if ioas is None:
        return [], sources, {"mappings": why}
    sources.append(f"struct iommufd_ioas @{ioas.value_():#x} (iopt.area_itree)")
    out, seen = [], set()
    node = rb_first(ioas.iopt.area_itree.rb_root.address_of_())
    no_uaddr = 0
    while node:
        addr = node.value_()
        if addr in seen or len(out) >= MAX_AREAS:
            raise ValueError(f"the IOAS's area tree loops or exceeds {MAX_AREAS} areas at {addr:#x}: it is damaged")
        seen.add(addr)
        area = drgn.container_of(node, "struct iopt_area", "node.rb")
        start, last = area.node.start.value_(), area.node.last.value_()
        prot = area.iommu_prot.value_()
        pages = area.pages
        vaddr, process = 0, None
        if pages:
            base = _user_address(pages)
            if base is None:
                no_uaddr += 1
            else:
                vaddr = base + area.page_offset.value_() + area.pages_node.start.value_() * PAGE_SIZE
            process = process_of(pages.source_task)
        out.append(VfioMapping(start, last - start + 1, vaddr, bool(prot & IOMMU_READ), bool(prot & IOMMU_WRITE),
                               process, bool(area.storage_domain), area.value_()))
        node = rb_next(node)
    unknown = {"vaddr": f"{no_uaddr} area(s) are file-backed (memfd or a file): no user address"} if no_uaddr else {}
    return out, sources, unknown
