"""Intel VT-d read from a kernel's memory (units, root/context/PASID tables, second-level
page tables) into :mod:`dumpkit.iommu.model`: the backend the vendor-neutral layer calls.
The readers are this package's modules (``units``, ``tables``, ``pagetable``,
``mappings``, ``iova``); its log lines are ``log``."""

from __future__ import annotations

import dataclasses

import drgn

from dumpkit.iommu.backend import Backend
from dumpkit.iommu.model import TranslationEntry, Unit, unknown_entry
from dumpkit.iommu.vtd.log import VtdLog
from dumpkit.kernel import device_name

__all__ = ["BACKEND", "present", "collect", "VENDOR"]

VENDOR = "intel-vtd"
ADDR_MASK = ((1 << 52) - 1) & ~0xFFF
READ_ERRORS = (drgn.FaultError, LookupError, AttributeError, ValueError)
# VT-d translation types as the model names them; the VT-d name stays in detail
NEUTRAL = {"untranslated": "translated", "all (ATS)": "translated", "second-level": "translated",
           "first-level": "translated", "nested": "translated", "pass-through": "pass-through",
           "reserved": "reserved", "unreadable": "unknown"}
# the page tables each translation type walks (VT-d 3.x: "first-/second-stage" for the
# spec's older "first-/second-level"; legacy context entries walk second-stage-format tables)
TABLES = {"untranslated": "legacy", "all (ATS)": "legacy", "first-level": "first-stage",
          "second-level": "second-stage", "nested": "nested"}


def present(prog: drgn.Program) -> bool:
    """The kernel found a DMAR table (``dmar_drhd_units`` is not empty)."""
    try:
        head = prog["dmar_drhd_units"]
    except (KeyError, LookupError):
        return False
    try:
        return head.next.value_() != head.address_of_().value_()
    except drgn.FaultError:
        return True


@dataclasses.dataclass
class VtdState:
    units: list[Unit]
    entries: list[TranslationEntry]
    mappings: list
    events: list
    errors: list[str]
    raw_units: list
    raw_entries: list


def _unit(u) -> Unit:
    return Unit(vendor=VENDOR, name=u.name, pci_id=None, mmio_base=u.register_base,
                capabilities={"cap": u.cap, "ecap": u.ecap, **{f"cap.{k}": v for k, v in u.cap_decoded.items()},
                              **{f"ecap.{k}": v for k, v in u.ecap_decoded.items()}},
                flags={"translation_on": u.translation_on, "irq_remapping_on": u.irq_remapping_on,
                       "translation_pre_enabled": u.translation_pre_enabled, "scalable_mode": u.scalable_mode,
                       "include_all": u.include_all, "ignored": u.ignored, "segment": u.segment},
                copied_tables=None if u.copied_tables is None else bool(u.copied_tables),
                scope=["all devices of the segment"] if u.include_all else list(u.device_scope),
                errors=[f"{k}: {v}" for k, v in u.unknown.items()])


def _translation_types(units: list[Unit], raw_entries) -> None:
    """Per scalable-mode unit, how many PASID entries use each translation type (PGTT):
    first-level tables are the default of kernels since v6.x on hardware that has them
    (``intel_iommu=sm_on``), second-level before; a dump says which it ran."""
    for unit in units:
        if not unit.flags.get("scalable_mode"):
            continue
        kinds: dict[str, int] = {}
        for e in raw_entries:
            if e.unit == unit.name and e.scalable_mode and e.translation != "unreadable":
                kinds[e.translation] = kinds.get(e.translation, 0) + 1
        unit.flags["translation_types"] = dict(sorted(kinds.items()))


def _table_sources(e, roots: dict[str, int | None]) -> list[str]:
    """The root and context tables an entry was read from."""
    out = []
    root = roots.get(e.unit)
    if root is not None:
        out.append(f"{e.unit} root table @phys {root:#x}")
    pointer = e.root[0] if e.scalable_mode and e.devfn >= 0x80 else e.root[1]
    if pointer & 1:
        out.append(f"{e.unit} context table of bus {e.bus:02x} @phys {pointer & ADDR_MASK:#x}")
    return out


def _entry(e, roots: dict[str, int | None]) -> TranslationEntry:
    neutral = NEUTRAL.get(e.translation, "translated")
    levels = None if e.address_width is None else (e.address_width - 30) // 9 + 2
    return TranslationEntry(
        bdf=e.bdf, unit=e.unit, translation=neutral, domain_id=e.domain_id, page_table=e.page_table,
        levels=levels, copied=e.copied, device=e.device, domain_type=e.domain_type,
        tables=TABLES.get(e.translation), raw=(*e.root, *e.context, *(e.pasid_entry or ())),
        detail={"vtd_translation": e.translation, "scalable_mode": e.scalable_mode, "pasid": e.pasid,
                "kernel_domain_id": e.kernel_domain_id},
        errors=list(e.errors), sources=_table_sources(e, roots))


def _absent_sources(u, bus: int) -> list[str]:
    """What says a requester id has no present context entry: the unit's root table (and
    the context table of its bus, if the root entry points to one)."""
    return [f"{u.name} root table @phys {u.root_table:#x} (bus {bus:02x})"] if u.root_table is not None else []


def _upstream(prog: drgn.Program) -> dict[str, list[str]]:
    """For each PCI function: itself and the bridges above it, nearest first."""
    from dumpkit.target.walk import pci_devices

    parent = {}
    for name, pdev in pci_devices(prog)[0]:
        try:
            bridge = pdev.bus.self
            parent[name] = device_name(bridge.dev) if bridge else None
        except drgn.FaultError:
            parent[name] = None
    out = {}
    for name in parent:
        chain, cur = [name], parent[name]
        while cur and cur not in chain and len(chain) < 64:
            chain.append(cur)
            cur = parent.get(cur)
        out[name] = chain
    return out


def _unit_for(chain: list[str], units) -> object | None:
    """The unit whose device scope holds the function or a bridge above it (a DMAR
    bridge scope covers everything below), else the segment's INCLUDE_ALL unit."""
    seg = int(chain[0][:4], 16)
    for bdf in chain:
        scoped = [u for u in units if not u.ignored and u.segment == seg and bdf in u.device_scope]
        if scoped:
            return scoped[0]
    return next((u for u in units if not u.ignored and u.segment == seg and u.include_all), None)


def collect(prog: drgn.Program, pci_bdfs: set[str] = frozenset()) -> VtdState:
    """VT-d units, one translation entry per requester id with a present context entry
    and, for each PCI function of the dump without one, what the hardware does with its
    DMA: blocked (no present entry: VT-d faults it), untranslated (translation off), or
    unknown when the table that would say is not in the dump."""
    from dumpkit.iommu.vtd.mappings import collect_device_mappings
    from dumpkit.iommu.vtd.tables import collect_context_entries
    from dumpkit.iommu.vtd.units import collect_units

    state = VtdState([], [], [], [], [], [], [])
    try:
        raw_units = collect_units(prog)
    except READ_ERRORS as e:
        # without every unit the scopes are unknown: no device's translation can be told
        why = f"VT-d units unreadable: {e}"
        state.errors.append(why)
        state.entries = [unknown_entry(bdf, "VT-d", why, ["dmar_drhd_units (struct dmar_drhd_unit, "
                                                          "struct intel_iommu)"]) for bdf in sorted(pci_bdfs)]
        return state
    state.raw_units, state.units = raw_units, [_unit(u) for u in raw_units]
    try:
        raw_entries = collect_context_entries(prog, raw_units)
        state.mappings = collect_device_mappings(prog, raw_entries)
    except READ_ERRORS as e:
        why = f"VT-d tables unreadable: {type(e).__name__}: {e}"
        state.errors.append(why)
        state.entries = [unknown_entry(bdf, "VT-d", why) for bdf in sorted(pci_bdfs)]
        return state
    state.raw_entries = raw_entries
    _translation_types(state.units, raw_entries)
    roots = {u.name: u.root_table for u in raw_units}
    entries = [_entry(e, roots) for e in raw_entries if e.translation != "unreadable"]
    # unreadable tables: the whole unit (root table) or a bus (context table) is unknown
    unreadable = [(e.unit, e.segment, None if e.bus == 0 and e.devfn == 0 and "root table" in " ".join(e.errors)
                   else e.bus, e.errors) for e in raw_entries if e.translation == "unreadable"]
    have = {e.bdf for e in entries}

    upstream = _upstream(prog) if pci_bdfs - have else {}
    for bdf in sorted(pci_bdfs - have):
        u = _unit_for(upstream.get(bdf, [bdf]), raw_units)
        if u is None:
            continue
        bus = int(bdf[5:7], 16)
        lost = next((errs for name, seg, b, errs in unreadable
                     if name == u.name and (b is None or b == bus)), None)
        if lost is not None:
            entries.append(unknown_entry(bdf, u.name, "; ".join(lost)))
        elif not u.translation_on and u.root_table is None:
            entries.append(TranslationEntry(bdf, u.name, "untranslated", None, None, None,
                                            detail={"reason": "the kernel did not enable translation on "
                                                              f"{u.name}"}))
        else:
            entries.append(TranslationEntry(bdf, u.name, "blocked", None, None, None, copied=None,
                                            detail={"reason": "no present context entry: the IOMMU blocks "
                                                              "and faults its DMA"},
                                            sources=_absent_sources(u, bus)))
    for e in entries:
        if e.device is None and e.bdf in pci_bdfs:
            e.device = e.bdf
    state.entries = sorted(entries, key=lambda e: e.bdf)
    return state


BACKEND = Backend(name=VENDOR, title="Intel VT-d", detect=present, collect=collect, log=VtdLog,
                  dma_fault_kinds=("dma-remap",), reporters=("dmar",),
                  tables={"intel-vtd": "DMA translation tables", "intel-vtd-ir": "interrupt-remapping table"},
                  translation_tables=frozenset({"intel-vtd"}))
