"""AMD-Vi units (``struct amd_iommu`` on ``amd_iommu_list``) and their PCI segments."""

from __future__ import annotations

import drgn

from dumpkit.kernel import has_member
from dumpkit.iommu.model import Unit
from dumpkit.target.walk import bounded_list

__all__ = ["AmdUnit", "collect_units", "EFR_FEATURES", "MAX_UNITS"]

MAX_UNITS = 256
AMD_IOMMU_FLAG_TRANS_PRE_ENABLED = 1 << 0
# Extended Feature Register bits 0-9, named as the kernel prints them (init.c feat_str)
EFR_FEATURES = ["PreF", "PPR", "X2APIC", "NX", "GT", "[5]", "IA", "GA", "HE", "PC"]


class AmdUnit:
    """A unit and what the device-table reader needs of it (plain values, no drgn objects
    kept beyond collection)."""

    def __init__(self, unit: Unit, address: int, segment: int, last_bdf: int, dev_table: int,
                 dev_table_size: int, old_copy: int, evt_buf: int, rlookup: int):
        self.unit, self.address, self.segment, self.last_bdf = unit, address, segment, last_bdf
        self.dev_table, self.dev_table_size, self.old_copy = dev_table, dev_table_size, old_copy
        self.evt_buf, self.rlookup = evt_buf, rlookup


def _bdf(segment: int, devid: int) -> str:
    return f"{segment:04x}:{devid >> 8:02x}:{(devid >> 3) & 0x1f:02x}.{devid & 7}"


def _pre_enabled(prog: drgn.Program) -> bool | None:
    try:
        return bool(prog["amd_iommu_pre_enabled"].value_())
    except (KeyError, LookupError):
        return None


def _outside_direct_map(prog: drgn.Program, addr: int) -> bool | None:
    """Whether a kernel address lies outside the direct map (x86_64: ``page_offset_base``
    up to ``max_pfn``), None where the kernel has no such variables. A capture kernel since
    6.18 (38e5f33ee359 "iommu/amd: Reuse device table for kdump") memremap()s the crashed
    kernel's device table and uses it in place, and that memory is no RAM of its own, so the
    mapping lies outside its direct map; a copy (before 6.18) is a page of its own, inside."""
    key = "dumpkit.amd.direct_map"
    if key not in prog.cache:
        try:
            base = prog["page_offset_base"].value_()
            prog.cache[key] = (base, base + (prog["max_pfn"].value_() << 12))
        except (KeyError, LookupError, drgn.FaultError):
            prog.cache[key] = None
    span = prog.cache[key]
    return None if span is None else not span[0] <= addr < span[1]


def collect_units(prog: drgn.Program) -> list[AmdUnit]:
    """Every AMD-Vi unit the kernel registered (bounded walk of ``amd_iommu_list``).

    :raises LookupError: the kernel has no AMD IOMMU driver (no ``amd_iommu_list``)
    """
    head = prog["amd_iommu_list"].address_of_()
    pre_enabled = _pre_enabled(prog)
    out = []
    for it in bounded_list(head, "struct amd_iommu", "list", "amd_iommu_list", MAX_UNITS):
        # 5.19/6.0 moved the device table into a per-segment struct amd_iommu_pci_seg
        # (commit 404ec4e4c169 "iommu/amd: Introduce per PCI segment device table")
        seg = it.pci_seg
        segment = seg.id.value_()
        efr = it.features.value_()
        flags = it.flags.value_()
        name = f"ivhd{it.index.value_()}"
        dev_table = seg.dev_table.value_()
        old_copy = seg.old_dev_tbl_cpy.value_() if has_member(seg.prog_, "struct amd_iommu_pci_seg", "old_dev_tbl_cpy") else 0
        pre = bool(flags & AMD_IOMMU_FLAG_TRANS_PRE_ENABLED)
        copied = reused = None
        if pre_enabled is not None:
            # early_enable_iommus() swaps the copy in as the device table when the copy succeeds
            copied = bool(pre and pre_enabled and old_copy and old_copy == dev_table)
            reused = _outside_direct_map(prog, dev_table) if copied else False
        unit = Unit(
            vendor="amd-vi", name=name, pci_id=_bdf(segment, it.devid.value_()), mmio_base=it.mmio_phys.value_(),
            capabilities={"cap_ptr": it.cap_ptr.value_(), "cap": it.cap.value_(), "efr": efr,
                          "efr2": it.features2.value_() if has_member(it.prog_, "struct amd_iommu", "features2") else None,
                          "features": [f for i, f in enumerate(EFR_FEATURES) if efr >> i & 1]},
            flags={"translation_pre_enabled": pre, "acpi_flags": it.acpi_flags.value_(),
                   "tables_reused_in_place": reused},
            copied_tables=copied,
        )
        rlookup = seg.rlookup_table.value_() if has_member(seg.prog_, "struct amd_iommu_pci_seg", "rlookup_table") else 0
        evt = it.evt_buf.value_()
        out.append(AmdUnit(unit, it.value_(), segment, seg.last_bdf.value_(), dev_table, seg.dev_table_size.value_(),
                           old_copy, evt, rlookup))
    return out
