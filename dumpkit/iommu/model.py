"""The vendor-neutral IOMMU model: units, per-device translation entries, page-table
leaves and mappings, and events read from an IOMMU's in-memory log. Backends
(``iommu/vtd``, ``iommu/amd``) fill it; nothing above them names a vendor's structures."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Unit", "TranslationEntry", "Leaf", "MappingRange", "PageTableWalk", "DeviceMappings", "IommuEvent",
           "summarise", "lookup", "unknown_entry", "table_source"]

PAGE = 4096


@dataclass
class Unit:
    """One IOMMU (a VT-d DRHD unit, an AMD-Vi IVHD).

    :param pci_id: the IOMMU's own PCI function where it is one (AMD-Vi), else None
    :param capabilities: decoded capability/feature registers as the kernel cached them
    :param copied_tables: the kernel took over the previous kernel's tables (kdump), or
        None when the dump cannot tell
    :param scope: the device ranges it translates ("0000:00:00.0-0000:ff:1f.7", BDFs)
    """

    vendor: str
    name: str
    pci_id: str | None
    mmio_base: int | None
    capabilities: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    copied_tables: bool | None = None
    scope: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class TranslationEntry:
    """How one requester id is translated: a VT-d context entry, an AMD-Vi device-table entry.

    :param translation: "translated", "pass-through", "blocked" or "untranslated"
    :param read, write: what the entry itself allows before any page table (None: not applicable)
    :param copied: the entry was taken over from the previous kernel (kdump)
    :param tables: the page-table format the hardware walks for it, in the vendor's words
        ("legacy", "first-stage", "second-stage", "nested" for VT-d, "v1" for AMD-Vi);
        None where no table is walked (pass-through, blocked) or it cannot be told
    :param raw: the entry's words as the hardware reads them
    :param sources: the kernel objects and tables this entry was read from ("dmar0 root
        table @phys 0x9cf000"), so a claim built on it can name what it read
    """

    bdf: str
    unit: str
    translation: str
    domain_id: int | None
    page_table: int | None
    levels: int | None
    read: bool | None = None
    write: bool | None = None
    copied: bool | None = None
    device: str | None = None
    domain_type: str | None = None
    tables: str | None = None
    raw: tuple[int, ...] = ()
    detail: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def unknown_entry(bdf: str, unit: str, reason: str, sources: list[str] | None = None) -> TranslationEntry:
    """The entry of a requester id whose translation the dump cannot tell (its unit or
    table is unreadable): never "blocked" or "untranslated" by default."""
    return TranslationEntry(bdf, unit, "unknown", None, None, None, detail={"reason": reason}, errors=[reason],
                            sources=list(sources or []))


class Leaf(NamedTuple):
    """A present leaf page-table entry: ``size`` in bytes; ``path`` the entry values from
    the top level down to this one."""

    iova: int
    phys: int
    size: int
    read: bool
    write: bool
    level: int
    path: tuple[int, ...]


@dataclass(frozen=True)
class MappingRange:
    """Contiguous IOVA range mapped to contiguous physical memory with one permission."""

    iova: int
    phys: int
    size: int
    read: bool
    write: bool
    superpage: bool


@dataclass
class PageTableWalk:
    """Result of walking one page-table root."""

    root: int
    levels: int
    leaves: list[Leaf] = field(default_factory=list)
    tables_read: int = 0
    entries_decoded: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class DeviceMappings:
    """What one device can reach through the IOMMU.

    :param source: "context entry" / "device table entry" (what the hardware walks)
    :param sources: the page tables read ("page tables from root @phys 0x... (12 table pages)")
    """

    device: str
    source: str
    root: int | None
    levels: int | None
    translation: str
    leaves: list[Leaf] = field(default_factory=list, repr=False)
    ranges: list[MappingRange] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    entries_decoded: int = 0
    sources: list[str] = field(default_factory=list)


@dataclass
class IommuEvent:
    """One record of an IOMMU's event/fault log read from memory.

    :param kind: the vendor's event name (``IO_PAGE_FAULT``, ``ILLEGAL_DEV_TABLE_ENTRY``...)
    :param printed: whether the kernel already printed (and consumed) it, if known
    """

    unit: str
    index: int
    kind: str
    requester: str | None
    domain_id: int | None
    address: int | None
    flags: dict = field(default_factory=dict)
    raw: tuple[int, ...] = ()
    printed: bool | None = None


def table_source(walk: PageTableWalk) -> str:
    """How a page-table walk is named among a claim's sources."""
    return f"IOMMU page tables from root @phys {walk.root:#x} ({walk.tables_read} table pages read)"


def summarise(leaves: list[Leaf]) -> tuple[list[MappingRange], dict]:
    """Coalesce leaves into ranges and count bytes.

    :return: (ranges, {"ranges", "bytes", "writable_bytes", "pages", "superpages"})
    """
    ranges: list[MappingRange] = []
    run = None          # [iova, phys, size, read, write, superpage] of the range being grown
    for iova, phys, size, read, write, _level, _path in sorted(leaves, key=lambda x: x.iova):
        if run and run[0] + run[2] == iova and run[1] + run[2] == phys and run[3] == read and run[4] == write:
            run[2] += size
            run[5] = run[5] or size > PAGE
            continue
        if run:
            ranges.append(MappingRange(*run))
        run = [iova, phys, size, read, write, size > PAGE]
    if run:
        ranges.append(MappingRange(*run))
    return ranges, {"ranges": len(ranges), "bytes": sum(r.size for r in ranges),
                    "writable_bytes": sum(r.size for r in ranges if r.write),
                    "pages": len(leaves), "superpages": sum(1 for x in leaves if x.size > PAGE)}


def lookup(leaves: list[Leaf], iova: int) -> tuple[int, bool, bool] | None:
    """Translate one IOVA through a walked table.

    :param leaves: in ascending IOVA order, as the walkers return them
    :return: (physical address, readable, writable), or None if not mapped
    """
    i = bisect.bisect_right(leaves, iova, key=lambda x: x.iova) - 1
    if i >= 0 and iova < leaves[i].iova + leaves[i].size:
        leaf = leaves[i]
        return leaf.phys + (iova - leaf.iova), leaf.read, leaf.write
    return None
