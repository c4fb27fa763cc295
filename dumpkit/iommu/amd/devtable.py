"""The AMD-Vi device table: one 256-bit entry per requester id, read from RAM."""

from __future__ import annotations

import struct

import drgn

from dumpkit.iommu.amd.units import AmdUnit, _bdf
from dumpkit.iommu.model import TranslationEntry

__all__ = ["decode_dte", "collect_entries", "dte_source", "scope_ranges"]

DTE_SIZE = 32
PAGE = 4096
DTE_V, DTE_TV = 1 << 0, 1 << 1
DTE_IR, DTE_IW = 1 << 61, 1 << 62
DTE_GV = 1 << 55
DTE_PPR = 1 << 52
ADDR_MASK = 0x000FFFFFFFFFF000


def decode_dte(words: tuple[int, int, int, int]) -> dict:
    """The fields of one device-table entry (AMD IOMMU spec, Device Table Entry Format).

    :return: valid, translation_valid, mode (paging levels, 0 = no translation),
        page_table, read, write, domain_id, guest_translation, ppr, iotlb, sysmgt,
        exclusion, interrupt remapping (valid, table, length, control)
    """
    d0, d1, d2, _d3 = words
    return {
        "valid": bool(d0 & DTE_V), "translation_valid": bool(d0 & DTE_TV),
        "mode": (d0 >> 9) & 7, "page_table": d0 & ADDR_MASK,
        "read": bool(d0 & DTE_IR), "write": bool(d0 & DTE_IW),
        "guest_translation": bool(d0 & DTE_GV), "ppr": bool(d0 & DTE_PPR),
        "domain_id": d1 & 0xFFFF, "iotlb": bool(d1 >> 32 & 1), "exclusion": bool(d1 >> 39 & 1),
        "sysmgt": (d1 >> 40) & 3,
        "irq_remap": bool(d2 & 1), "irq_table_len": 1 << ((d2 >> 1) & 0xF) if d2 & 1 else None,
        "irq_table": (d2 >> 6 & ((1 << 46) - 1)) << 6 if d2 & 1 else None, "irq_control": (d2 >> 60) & 3,
    }


def _translation(f: dict) -> str:
    """What the IOMMU does with a request under this entry. An invalid entry (V=0) or
    one without translation information (TV=0) lets DMA through untranslated; mode 0
    with neither IR nor IW blocks it (how Linux parks unused requester ids)."""
    if not f["valid"] or not f["translation_valid"]:
        return "untranslated"
    if f["mode"] == 0:
        return "pass-through" if f["read"] or f["write"] else "blocked"
    if f["mode"] == 7:
        return "reserved"
    return "translated"


def scope_ranges(prog: drgn.Program, u: AmdUnit) -> list[str]:
    """The requester ids the kernel routes to this unit (its rlookup table, built from the
    IVHD device entries), as BDF ranges."""
    if not u.rlookup:
        return []
    n = u.last_bdf + 1
    ptrs = struct.unpack(f"<{n}Q", prog.read(u.rlookup, n * 8))
    ranges, start = [], None
    for devid, ptr in enumerate([*ptrs, 0]):
        if ptr == u.address and start is None:
            start = devid
        elif ptr != u.address and start is not None:
            first, last = _bdf(u.segment, start), _bdf(u.segment, devid - 1)
            ranges.append(first if first == last else f"{first}-{last}")
            start = None
    return ranges


def collect_entries(prog: drgn.Program, u: AmdUnit) -> tuple[list[TranslationEntry], dict[int, str]]:
    """Entries of the unit's device table that do something: valid, or carrying a
    domain or interrupt table (an all-zero entry passes DMA untranslated and is listed
    only when a PCI device of the dump uses that requester id).

    The table is read a page at a time: a page the dump lost costs the 128 requester ids
    it holds, not the table.

    :return: (entries, {requester id: why its entry is unreadable} for the lost pages)
    """
    from dumpkit.target.walk import describe_fault

    n = u.last_bdf + 1
    if u.dev_table_size and n * DTE_SIZE > u.dev_table_size:
        raise ValueError(f"{u.unit.name}: last_bdf {u.last_bdf:#x} beyond the device table "
                         f"({u.dev_table_size} bytes)")
    per_page = PAGE // DTE_SIZE
    out, lost = [], {}
    for first in range(0, n, per_page):
        count = min(per_page, n - first)
        try:
            raw = prog.read(u.dev_table + first * DTE_SIZE, count * DTE_SIZE)
        except drgn.FaultError as e:
            why = describe_fault(prog, e, f"{u.unit.name} device table entries {first:#x}-{first + count - 1:#x}")
            lost.update(dict.fromkeys(range(first, first + count), why))
            continue
        for k in range(count):
            devid = first + k
            words = struct.unpack_from("<4Q", raw, k * DTE_SIZE)
            if not any(words[:3]):
                continue
            out.append(_entry(u, devid, words))
    return out, lost


def _entry(u: AmdUnit, devid: int, words: tuple[int, int, int, int]) -> TranslationEntry:
    f = decode_dte(words)
    translation = _translation(f)
    e = TranslationEntry(
        bdf=_bdf(u.segment, devid), unit=u.unit.name, translation=translation,
        domain_id=f["domain_id"] if f["valid"] and f["translation_valid"] else None,
        page_table=f["page_table"] if translation == "translated" else None,
        levels=f["mode"] if translation == "translated" else None,
        read=f["read"], write=f["write"], copied=u.unit.copied_tables, raw=words, detail=f,
        # the host (v1) table of the mode field; guest (v2, GCR3) tables are not walked here
        tables="v1" if translation == "translated" else None,
        sources=[dte_source(u, devid)])
    if translation == "reserved":
        e.errors.append(f"device table entry mode 7 (reserved) for {e.bdf}")
    return e


def dte_source(u: AmdUnit, devid: int) -> str:
    """How a device-table entry is named among a claim's sources."""
    return f"{u.unit.name} device table entry {devid:#x} @{u.dev_table + devid * DTE_SIZE:#x}"
