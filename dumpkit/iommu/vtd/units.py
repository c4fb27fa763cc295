"""Intel VT-d units (DRHDs) as the kernel describes them in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.mm import virt_to_phys

from dumpkit.kernel import device_name, has_member
from dumpkit.target.walk import bounded_list, describe_fault

__all__ = ["IommuUnit", "UnitUnreadable", "collect_units", "decode_cap", "decode_ecap", "SAGAW_LEVELS"]

SAGAW_LEVELS = {1: "3-level (39-bit)", 2: "4-level (48-bit)", 3: "5-level (57-bit)"}
VTD_FLAG_TRANS_PRE_ENABLED, VTD_FLAG_IRQ_REMAP_PRE_ENABLED = 1 << 0, 1 << 1
DMA_GCMD_TE, DMA_GCMD_IRE = 1 << 31, 1 << 25


def decode_cap(cap: int) -> dict:
    """The capability register fields dumpkit reports."""
    sagaw = (cap >> 8) & 0x1F
    return {
        "number_of_domains": 1 << (4 + 2 * (cap & 7)),
        "sagaw": [SAGAW_LEVELS[bit] for bit in SAGAW_LEVELS if sagaw & (1 << bit)],
        "mgaw_bits": ((cap >> 16) & 0x3F) + 1,
        "caching_mode": bool(cap & (1 << 7)),
        "fault_records": ((cap >> 40) & 0xFF) + 1,
        "superpages": [name for bit, name in ((0, "2MiB"), (1, "1GiB")) if (cap >> 34) & (1 << bit)],
    }


def decode_ecap(ecap: int) -> dict:
    """The extended capability register fields dumpkit reports."""
    return {
        "scalable_mode": bool(ecap & (1 << 43)),
        "pass_through": bool(ecap & (1 << 6)),
        "queued_invalidation": bool(ecap & (1 << 1)),
        "interrupt_remapping": bool(ecap & (1 << 3)),
        "device_iotlb": bool(ecap & (1 << 2)),
        "first_level": bool(ecap & (1 << 47)),
        "second_level": bool(ecap & (1 << 46)),
        "pasid": bool(ecap & (1 << 40)),
    }


class UnitUnreadable(LookupError):
    """A DRHD unit whose kernel structures cannot be read: the message names them and the
    page of the dump. Without every unit the scopes are unknown, so no device's
    translation can be told."""


@dataclass
class IommuUnit:
    """One DMA-remapping hardware unit.

    :param translation_on: the kernel's cached Global Command has TE set (this kernel
        turned translation on); the live register is MMIO and not in the dump
    :param scalable_mode: the kernel runs this unit in scalable mode
    :param copied_tables: (bus, devfn) whose context entries are still the copied ones
    """

    name: str
    seq_id: int
    segment: int
    register_base: int
    include_all: bool
    ignored: bool
    device_scope: list[str]
    cap: int
    ecap: int
    cap_decoded: dict
    ecap_decoded: dict
    gcmd: int
    translation_on: bool
    irq_remapping_on: bool
    translation_pre_enabled: bool
    irq_remapping_pre_enabled: bool
    scalable_mode: bool | None
    root_table: int | None
    agaw: int | None
    domain_ids_in_use: list[int] | None
    copied_tables: list[tuple[int, int]] | None
    unknown: dict[str, str] = field(default_factory=dict)


def _bitmap(prog: drgn.Program, ptr: drgn.Object, nbits: int) -> list[int]:
    data = prog.read(ptr.value_(), (nbits + 7) // 8)
    return [i * 8 + b for i, byte in enumerate(data) if byte for b in range(8) if byte >> b & 1]


def _scope(drhd: drgn.Object) -> list[str]:
    out = []
    for i in range(drhd.devices_cnt.value_()):
        scope = drhd.devices[i]
        dev = scope.dev
        if dev:
            out.append(device_name(dev))
        else:
            out.append(f"{scope.bus.value_():02x}:{scope.devfn.value_() >> 3:02x}.{scope.devfn.value_() & 7}"
                       " (absent)")
    return out


def scalable_mode_in_use(prog: drgn.Program, ecap: int) -> bool | None:
    """What sm_supported() returns: the intel_iommu_sm switch and ECAP.SMTS."""
    try:
        return bool(prog["intel_iommu_sm"].value_()) and bool(ecap & (1 << 43))
    except KeyError:
        return None


def collect_units(prog: drgn.Program) -> list[IommuUnit]:
    """Every unit on ``dmar_drhd_units``.

    :return: empty if the kernel has no Intel IOMMU support or found no DMAR table
    """
    try:
        head = prog["dmar_drhd_units"]
    except KeyError:
        return []
    units = []
    for drhd in bounded_list(head.address_of_(), "struct dmar_drhd_unit", "list", "dmar_drhd_units", 4096):
        try:
            unit = _unit(prog, drhd)
        except drgn.FaultError as e:
            raise UnitUnreadable(describe_fault(prog, e, f"DMAR unit (struct dmar_drhd_unit @{drhd.value_():#x} "
                                                         "and its struct intel_iommu)")) from None
        if unit is not None:
            units.append(unit)
    return units


def _unit(prog: drgn.Program, drhd: drgn.Object) -> IommuUnit | None:
    """One unit; None for a DRHD without an intel_iommu."""
    iommu = drhd.iommu
    if not iommu:
        return None
    unknown: dict[str, str] = {}
    cap, ecap = iommu.cap.value_(), iommu.ecap.value_()
    flags = iommu.flags.value_() if has_member(iommu.prog_, "struct intel_iommu", "flags") else 0
    gcmd = iommu.gcmd.value_()
    root = None
    if iommu.root_entry:
        root = virt_to_phys(prog, iommu.root_entry).value_()
    ndoms = 1 << (4 + 2 * (cap & 7))
    domain_ids = copied = None
    if has_member(iommu.prog_, "struct intel_iommu", "domain_ids") and iommu.domain_ids:
        try:
            domain_ids = _bitmap(prog, iommu.domain_ids, ndoms)
        except drgn.FaultError as e:
            unknown["domain_ids_in_use"] = f"bitmap unreadable: {e}"
    else:
        unknown["domain_ids_in_use"] = "no domain_ids bitmap in this kernel (an IDA since 6.16)"
    if has_member(iommu.prog_, "struct intel_iommu", "copied_tables"):
        if iommu.copied_tables:
            try:
                copied = [(b >> 8, b & 0xFF) for b in _bitmap(prog, iommu.copied_tables, 1 << 16)]
            except drgn.FaultError as e:
                unknown["copied_tables"] = f"bitmap unreadable: {e}"
        else:
            copied = []
    else:
        unknown["copied_tables"] = "kernel before 6.0 marks copied context entries with bit 67 instead"
    return IommuUnit(
        name=iommu.name.string_().decode(), seq_id=iommu.seq_id.value_(),
        segment=drhd.segment.value_(), register_base=drhd.reg_base_addr.value_(),
        include_all=bool(drhd.include_all), ignored=bool(drhd.ignored), device_scope=_scope(drhd),
        cap=cap, ecap=ecap, cap_decoded=decode_cap(cap), ecap_decoded=decode_ecap(ecap), gcmd=gcmd,
        translation_on=bool(gcmd & DMA_GCMD_TE), irq_remapping_on=bool(gcmd & DMA_GCMD_IRE),
        translation_pre_enabled=bool(flags & VTD_FLAG_TRANS_PRE_ENABLED),
        irq_remapping_pre_enabled=bool(flags & VTD_FLAG_IRQ_REMAP_PRE_ENABLED),
        scalable_mode=scalable_mode_in_use(prog, ecap), root_table=root, agaw=iommu.agaw.value_(),
        domain_ids_in_use=domain_ids, copied_tables=copied, unknown=unknown)
