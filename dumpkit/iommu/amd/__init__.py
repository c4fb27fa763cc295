"""AMD-Vi read from a kernel's memory: units, device table, v1 I/O page tables and the
event log, into :mod:`dumpkit.iommu.model`."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

from dumpkit.iommu.amd.log import AmdLog
from dumpkit.iommu.amd.devtable import collect_entries, decode_dte, dte_source, scope_ranges
from dumpkit.iommu.amd.eventlog import collect_events, decode_event
from dumpkit.iommu.amd.pagetable import walk_v1
from dumpkit.iommu.amd.units import collect_units
from dumpkit.iommu.backend import Backend
from dumpkit.iommu.model import (DeviceMappings, IommuEvent, TranslationEntry, Unit, table_source,
                                  unknown_entry)

__all__ = ["BACKEND", "AmdState", "collect", "present", "decode_dte", "decode_event", "walk_v1"]

VENDOR = "amd-vi"


@dataclass
class AmdState:
    units: list[Unit] = field(default_factory=list)
    entries: list[TranslationEntry] = field(default_factory=list)
    mappings: list[DeviceMappings] = field(default_factory=list)
    events: list[IommuEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def present(prog: drgn.Program) -> bool:
    """The kernel registered at least one AMD-Vi unit."""
    try:
        head = prog["amd_iommu_list"]
    except (KeyError, LookupError):
        return False
    try:
        return head.next.value_() != head.address_of_().value_()
    except drgn.FaultError:
        return True   # there, but unreadable: collect() reports it


def _mappings(prog: drgn.Program, entries: list[TranslationEntry]) -> list[DeviceMappings]:
    cache: dict = {}
    out = []
    for e in entries:
        dm = DeviceMappings(e.bdf, "device table entry", e.page_table, e.levels, e.translation)
        dm.errors.extend(e.errors)
        if e.translation == "pass-through" or e.translation == "untranslated":
            dm.summary = {"ranges": None, "bytes": None, "writable_bytes": None, "pass_through": True}
        elif e.translation == "translated" and e.page_table:
            key = (e.page_table, e.levels, e.read, e.write)
            if key not in cache:
                cache[key] = walk_v1(prog, e.page_table, e.levels, bool(e.read), bool(e.write))
            walk = cache[key]
            dm.leaves, dm.entries_decoded = walk.leaves, walk.entries_decoded
            dm.errors.extend(walk.errors)
            dm.ranges, dm.summary = walk.summarise()
            dm.sources = [table_source(walk)]
        out.append(dm)
    return out


def collect(prog: drgn.Program, pci_bdfs: set[str] = frozenset()) -> AmdState:
    """Everything AMD-Vi of a dump. Entries whose device table slot is empty are kept
    only for requester ids of PCI functions in the dump (they pass DMA untranslated).

    :param pci_bdfs: BDFs of the dump's PCI functions
    """
    from dumpkit.target.walk import describe_fault

    state = AmdState()
    try:
        units = collect_units(prog)
    except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
        # without every unit the scopes are unknown: no device's translation can be told
        why = (describe_fault(prog, e, "AMD-Vi units (amd_iommu_list, struct amd_iommu)")
               if isinstance(e, drgn.FaultError) else f"AMD-Vi units unreadable: {type(e).__name__}: {e}")
        state.errors.append(why)
        state.entries = [unknown_entry(bdf, "AMD-Vi", why, ["amd_iommu_list (struct amd_iommu)"])
                         for bdf in sorted(pci_bdfs)]
        return state
    for u in units:
        state.units.append(u.unit)
        try:
            u.unit.scope = scope_ranges(prog, u)
        except (drgn.FaultError, ValueError) as e:
            u.unit.errors.append(f"device ranges unreadable: {e}")
        try:
            entries, lost = collect_entries(prog, u)
        except (drgn.FaultError, ValueError) as e:
            why = (describe_fault(prog, e, f"{u.unit.name} device table") if isinstance(e, drgn.FaultError)
                   else f"{u.unit.name}: device table at {u.dev_table:#x} unreadable: {e}")
            entries, lost = [], {devid: why for devid in range(u.last_bdf + 1)}
        state.errors.extend(dict.fromkeys(lost.values()))
        have = {e.bdf for e in entries}
        for bdf in sorted(pci_bdfs - have):
            if not _in_unit(bdf, u):
                continue
            devid = _devid(bdf)
            if devid in lost:
                entries.append(unknown_entry(bdf, u.unit.name, lost[devid], [dte_source(u, devid)]))
            else:
                entries.append(TranslationEntry(bdf, u.unit.name, "untranslated", None, None, None,
                                                copied=u.unit.copied_tables,
                                                detail={"valid": False, "note": "empty device table entry"},
                                                sources=[dte_source(u, devid)]))
        state.entries.extend(sorted(entries, key=lambda e: e.bdf))
        try:
            state.events.extend(collect_events(prog, u))
        except drgn.FaultError as e:
            state.errors.append(describe_fault(prog, e, f"{u.unit.name} event log (in-memory events unknown)"))
    for e in state.entries:
        e.device = e.bdf if e.bdf in pci_bdfs else None
    # Linux parks every unused requester id on a blocking entry: keep those only for
    # functions the dump has
    state.entries = [e for e in state.entries if e.device or e.translation != "blocked"]
    state.mappings = _mappings(prog, state.entries)
    return state


def _devid(bdf: str) -> int:
    bus, devfn = int(bdf[5:7], 16), bdf[8:]
    dev, fn = devfn.split(".")
    return bus << 8 | int(dev, 16) << 3 | int(fn)


def _in_unit(bdf: str, u) -> bool:
    return int(bdf[:4], 16) == u.segment and _devid(bdf) <= u.last_bdf


BACKEND = Backend(name=VENDOR, title="AMD-Vi", detect=present, collect=collect, log=AmdLog,
                  dma_fault_kinds=("amd-vi:io_page_fault",),
                  reporters=("iommu",), tables={"amd-vi": "AMD-Vi device table"},
                  translation_tables=frozenset({"amd-vi"}))
