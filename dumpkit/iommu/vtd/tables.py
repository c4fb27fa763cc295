"""VT-d root and context tables (legacy and scalable mode) read from a kernel's RAM,
joined with the kernel's device_domain_info / dmar_domain."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import drgn

from dumpkit.iommu.vtd.units import IommuUnit
from dumpkit.kernel import device_iommu_priv, device_name, has_member
from dumpkit.target.walk import describe_fault

__all__ = ["ContextEntry", "collect_context_entries", "read_phys_page", "DOMAIN_TYPES"]

PAGE = 4096
PAGE_MASK = ~(PAGE - 1) & ((1 << 64) - 1)
ADDR_MASK = ((1 << 52) - 1) & ~(PAGE - 1)   # bits 51:12 of a table pointer
LEGACY_TT = {0: "untranslated", 1: "all (ATS)", 2: "pass-through", 3: "reserved"}
PGTT = {1: "first-level", 2: "second-level", 3: "nested", 4: "pass-through"}
DOMAIN_TYPES = {0: "BLOCKED", 4: "IDENTITY", 1: "UNMANAGED", 3: "DMA", 11: "DMA_FQ"}


def read_phys_page(prog: drgn.Program, addr: int) -> bytes:
    """One 4 KiB page of physical memory. :raises drgn.FaultError: not in the dump"""
    return prog.read(addr & PAGE_MASK, PAGE, True)


@dataclass
class ContextEntry:
    """One present context entry (one PASID table entry in scalable mode).

    ``root`` and ``context`` are (hi, lo) as the kernel's debugfs prints them; ``pasid``
    and ``pasid_entry`` (val[2], val[1], val[0]) only in scalable mode.
    """

    unit: str
    segment: int
    bus: int
    devfn: int
    scalable_mode: bool
    root: tuple[int, int]
    context: tuple[int, int]
    translation: str
    domain_id: int | None
    address_width: int | None
    page_table: int | None
    pasid: int | None = None
    pasid_entry: tuple[int, int, int] | None = None
    copied: bool | None = None
    device: str | None = None
    domain_type: str | None = None
    kernel_domain_id: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def bdf(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7}"

    def debugfs_line(self) -> str:
        """This entry as a line of /sys/kernel/debug/iommu/intel/dmar_translation_struct."""
        pasid = -1 if self.pasid is None else self.pasid
        pe = self.pasid_entry or (0, 0, 0)
        return (f"{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}\t"
                f"0x{self.root[0]:016x}:0x{self.root[1]:016x}\t0x{self.context[0]:016x}:0x{self.context[1]:016x}\t"
                f"{pasid:<6d}\t0x{pe[0]:016x}:0x{pe[1]:016x}:0x{pe[2]:016x}")


def _legacy(unit: IommuUnit, bus: int, devfn: int, root: tuple[int, int], hi: int, lo: int) -> ContextEntry:
    aw = hi & 7
    return ContextEntry(unit.name, unit.segment, bus, devfn, False, root, (hi, lo),
                        translation=LEGACY_TT[(lo >> 2) & 3], domain_id=(hi >> 8) & 0xFFFF,
                        address_width=30 + 9 * aw, page_table=lo & ADDR_MASK if (lo >> 2) & 3 != 2 else None)


def _scalable(prog: drgn.Program, unit: IommuUnit, bus: int, devfn: int, root: tuple[int, int], hi: int,
              lo: int) -> list[ContextEntry]:
    """One entry per present PASID table entry below this context entry."""
    out = []
    dir_entries = 1 << (((lo >> 9) & 7) + 7)
    dir_base = lo & ADDR_MASK
    dir_pages: dict[int, bytes] = {}
    for dir_idx in range(dir_entries):
        addr = dir_base + dir_idx * 8
        page = dir_pages.get(addr & PAGE_MASK)
        if page is None:
            page = dir_pages[addr & PAGE_MASK] = read_phys_page(prog, addr)
        pde, = struct.unpack_from("<Q", page, addr & (PAGE - 1))
        if not pde & 1:
            continue
        table = read_phys_page(prog, pde & ~0x3F)
        base_off = (pde & ~0x3F) & (PAGE - 1)
        for idx in range(64):
            off = base_off + idx * 64
            if off + 64 > PAGE:
                break
            val = struct.unpack_from("<8Q", table, off)
            if not val[0] & 1:
                continue
            pgtt = (val[0] >> 6) & 7
            pt = val[0] & ADDR_MASK if pgtt in (2, 3) else (val[2] & ADDR_MASK if pgtt == 1 else None)
            out.append(ContextEntry(unit.name, unit.segment, bus, devfn, True, root, (hi, lo),
                                    translation=PGTT.get(pgtt, f"pgtt {pgtt}"), domain_id=val[1] & 0xFFFF,
                                    address_width=_pasid_address_width(val, pgtt), page_table=pt, pasid=(dir_idx << 6) + idx,
                                    pasid_entry=(val[2], val[1], val[0])))
    return out


def _pasid_address_width(val: tuple[int, ...], pgtt: int) -> int:
    """The input address width of a scalable-mode PASID entry's tables (VT-d 3.x, 9.6):
    first-stage tables by their paging mode FLPM (qword 2 bits 3:2: 4-level, 48 bits, or
    5-level, 57 bits), second-stage ones by AW (qword 0 bits 4:2, 30 + 9 * AW bits)."""
    if pgtt == 1:
        return 48 + 9 * ((val[2] >> 2) & 3)
    return 30 + 9 * ((val[0] >> 2) & 7)


def _walk_unit(prog: drgn.Program, unit: IommuUnit) -> list[ContextEntry]:
    if unit.root_table is None:
        return []
    root_page = read_phys_page(prog, unit.root_table)
    sm = bool(unit.scalable_mode)
    copied = set(unit.copied_tables) if unit.copied_tables is not None else None
    out: list[ContextEntry] = []
    for bus in range(256):
        lo, hi = struct.unpack_from("<QQ", root_page, bus * 16)
        halves = [(lo, 0)] + ([(hi, 0x80)] if sm else [])
        for pointer, first_devfn in halves:
            if not pointer & 1:
                continue
            try:
                ctx_page = read_phys_page(prog, pointer & ADDR_MASK)
            except drgn.FaultError as e:
                entry = ContextEntry(unit.name, unit.segment, bus, first_devfn, sm, (hi, lo), (0, 0),
                                     "unreadable", None, None, None)
                entry.errors.append(describe_fault(prog, e, f"{unit.name} context table of bus {bus:02x}",
                                                   physical=True))
                out.append(entry)
                continue
            stride, count = (32, 128) if sm else (16, 256)
            for i in range(count):
                c_lo, c_hi = struct.unpack_from("<QQ", ctx_page, i * stride)
                if not c_lo & 1:
                    continue
                devfn = first_devfn + i
                if sm:
                    try:
                        entries = _scalable(prog, unit, bus, devfn, (hi, lo), c_hi, c_lo)
                    except drgn.FaultError as e:
                        entry = ContextEntry(unit.name, unit.segment, bus, devfn, True, (hi, lo), (c_hi, c_lo),
                                             "unreadable", None, None, None)
                        entry.errors.append(describe_fault(prog, e, f"{unit.name} PASID directory or table of "
                                                                    f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7}",
                                                           physical=True))
                        entries = [entry]
                else:
                    entries = [_legacy(unit, bus, devfn, (hi, lo), c_hi, c_lo)]
                for e in entries:
                    # before 6.0 the copy marker was bit 67 of the (legacy) context entry
                    e.copied = (bus, devfn) in copied if copied is not None else (
                        bool(c_hi & 8) if not sm else None)
                out.extend(entries)
    return out


def _kernel_view(prog: drgn.Program) -> dict[tuple[int, int, int], tuple[str, str | None, int | None]]:
    """(segment, bus, devfn) -> (device name, domain type, domain id) from device_domain_info;
    a device whose own data is unreadable is left out, not the whole view."""
    from dumpkit.target.walk import pci_devices

    view = {}
    for _name, pdev in pci_devices(prog)[0]:
        try:
            found = _device_view(prog, pdev)
        except drgn.FaultError:
            continue        # this device's IOMMU data is lost; the others' are not
        if found is not None:
            view[found[0]] = found[1]
    return view


def _device_view(prog: drgn.Program, pdev: drgn.Object):
    """((segment, bus, devfn), (name, domain type, domain id)) of one device, or None."""
    from drgn.helpers.linux.xarray import xa_load

    priv = device_iommu_priv(pdev.dev)
    if priv is None:
        return None
    info = drgn.cast("struct device_domain_info *", priv)
    name = device_name(pdev.dev)
    dtype = did = None
    if info.domain:
        t = info.domain.domain.type.value_()
        dtype = DOMAIN_TYPES.get(t, f"type {t:#x}")
        if has_member(prog, "struct dmar_domain", "iommu_array"):    # >= 6.0
            iinfo = xa_load(info.domain.iommu_array.address_of_(), info.iommu.seq_id.value_())
            if iinfo:
                did = drgn.cast("struct iommu_domain_info *", iinfo).did.value_()
        elif has_member(prog, "struct dmar_domain", "iommu_did"):    # before 6.0
            did = info.domain.iommu_did[info.iommu.seq_id.value_()].value_()
    return (info.segment.value_(), info.bus.value_(), info.devfn.value_()), (name, dtype, did)


def collect_context_entries(prog: drgn.Program, units: list[IommuUnit]) -> list[ContextEntry]:
    """Every present context entry of every unit, with the device and domain the kernel
    associates with it. Unreadable tables give entries with ``errors``, never an exception.
    """
    entries = []
    for unit in units:
        try:
            entries.extend(_walk_unit(prog, unit))
        except drgn.FaultError as e:
            bad = ContextEntry(unit.name, unit.segment, 0, 0, bool(unit.scalable_mode), (0, 0), (0, 0),
                               "unreadable", None, None, None)
            bad.errors.append(describe_fault(prog, e, f"{unit.name} root table", physical=True))
            entries.append(bad)
    try:
        view = _kernel_view(prog)
    except (drgn.FaultError, LookupError, AttributeError) as e:
        for entry in entries:
            entry.errors.append(f"kernel device/domain view unreadable: {e}")
        return entries
    for entry in entries:
        match = view.get((entry.segment, entry.bus, entry.devfn))
        if match:
            entry.device, entry.domain_type, entry.kernel_domain_id = match
    return entries
