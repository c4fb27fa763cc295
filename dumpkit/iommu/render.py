"""Render IOMMU state, whatever the vendor: DataFrames, the text report of
``dumpkit iommu`` and JSON."""

from __future__ import annotations

import dataclasses

from dumpkit.iommu.collect import IommuState

__all__ = ["fault_line", "units_frame", "entries_frame", "mappings_frame", "events_frame", "faults_frame", "iommu_text",
           "iommu_json"]


def units_frame(state: IommuState):
    import pandas as pd

    rows = []
    for u in state.units:
        row = {k: v for k, v in dataclasses.asdict(u).items() if k not in ("capabilities", "flags")}
        row.update({f"cap.{k}" if not k.startswith(("cap.", "ecap.")) else k: v
                    for k, v in u.capabilities.items() if not isinstance(v, list)})
        row.update(u.flags)
        rows.append(row)
    return pd.DataFrame(rows)


def entries_frame(state: IommuState):
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in dataclasses.asdict(e).items() if k not in ("raw", "detail")}
                         for e in state.entries])


def mappings_frame(state: IommuState):
    """One row per device: what it could reach through the IOMMU."""
    import pandas as pd

    return pd.DataFrame([{"device": m.device, "translation": m.translation, "root": m.root, "levels": m.levels,
                          **{k: m.summary.get(k) for k in ("ranges", "pages", "bytes", "writable_bytes",
                                                             "superpages")},
                          "errors": "; ".join(m.errors)} for m in state.mappings])


def events_frame(state: IommuState):
    """Records of the IOMMUs' in-memory event logs."""
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in dataclasses.asdict(e).items() if k != "raw"} for e in state.events])


def faults_frame(state: IommuState):
    """One row per fault record of the logs, DMA faults with their resolution in the dump."""
    import pandas as pd

    by_fault = {id(c.fault): c for c in state.correlations}
    rows = []
    for f in state.faults:
        c = by_fault.get(id(f))
        rows.append({"time": f.time, "source": f.source, "kind": f.kind, "iommu": f.iommu, "unit": f.unit,
                     "requester": f.requester, "pasid": f.pasid, "address": f.address, "access": f.access,
                     "reason_code": f.reason_code, "reason": f.reason,
                     "device": c.device if c else None, "driver": c.driver if c else None,
                     "phys": c.phys if c else None, "buffer": c.buffer if c else None,
                     "note": c.note if c else None, "raw": f.raw})
    frame = pd.DataFrame(rows)
    for col in ("address", "phys"):   # 64-bit addresses: never through float
        if col in frame:
            frame[col] = frame[col].astype("object")
    return frame


def fault_line(f) -> str:
    """One fault or event record of a log as a line: time, kind, requester, address, reason, source."""
    t = f"[{f.time:12.6f}] " if f.time is not None else ""
    what = f.kind + (f" {f.unit}" if f.unit else "") + (f" ({f.iommu})" if f.kind == "table-copy" else "")
    if f.requester:
        what += f" from {f.requester}"
    if f.pasid is not None:
        what += f" pasid {f.pasid:#x}"
    if f.address is not None:
        what += f" {f.access + ' ' if f.access else ''}{f.address:#x}"
    if f.reason:
        what += f": {f.reason}" + (f" ({f.reason_code:#04x})" if f.reason_code is not None else "")
    return f"{t}{what}  <{f.source}>"


def _unit_line(u) -> str:
    f = u.flags
    parts = [f"{u.name} ({u.vendor})"]
    if u.pci_id:
        parts.append(f"PCI function {u.pci_id}")
    if u.mmio_base is not None:
        parts.append(f"registers {u.mmio_base:#x}")
    if "scalable_mode" in f:
        kinds = f.get("translation_types")
        parts.append(f"{'scalable' if f['scalable_mode'] else 'legacy'} mode"
                     + (f" (PASID entries: {', '.join(f'{n} {k}' for k, n in kinds.items())})" if kinds else ""))
    if "translation_on" in f:
        parts.append(f"translation {'on' if f['translation_on'] else 'off'}")
    parts.append(f"pre-enabled by the previous kernel: {'yes' if f.get('translation_pre_enabled') else 'no'}")
    if u.flags.get("tables_reused_in_place"):
        parts.append("tables of the previous kernel: reused in place, in the previous kernel's memory")
    elif u.copied_tables is not None:
        parts.append(f"tables copied from the previous kernel: {'yes' if u.copied_tables else 'no'}")
    feats = u.capabilities.get("features")
    if feats:
        parts.append("features " + " ".join(feats))
    return ", ".join(parts)


def iommu_text(state: IommuState) -> str:
    if not state.vendors:
        lines = ["no IOMMU in use in this kernel (no DMAR or IVRS unit registered): devices DMA to physical "
                 "memory"]
    else:
        lines = [_unit_line(u) for u in state.units]
    lines.append("")
    lines.append(f"{'device':14}{'unit':8}{'translation':14}{'tables':14}{'domain':>7}{'levels':>7}  {'type':9}"
                 f"{'copied':8}{'pages':>7}{'writable':>11}")
    maps = {m.device: m for m in state.mappings}
    for e in state.entries:
        m = maps.get(e.bdf)
        pages = m.summary.get("pages") if m and m.summary else None
        wr = m.summary.get("writable_bytes") if m and m.summary else None
        copied = "unknown" if e.copied is None else "yes" if e.copied else "no"
        # counts from tables that are partly unreadable are lower bounds
        least = ">=" if m is not None and m.errors else ""
        pages = f"{least}{pages}" if pages is not None else "-"
        wr = f"{least}{wr}" if wr is not None else "-"
        note = e.detail.get("reason") or (f"page tables partly unreadable: {m.errors[0]}"
                                          if m is not None and m.errors else "")
        lines.append(f"{e.bdf:14}{e.unit:8}{e.translation:14}{e.tables or '-':14}"
                     f"{e.domain_id if e.domain_id is not None else '-':>7}"
                     f"{e.levels or '-':>7}  {e.domain_type or '-':9}{copied:8}{pages:>7}{wr:>11}"
                     + (f"  {note}" if note else ""))
    if state.events:
        lines.append("")
        lines.append(f"events in the IOMMUs' logs in memory ({len(state.events)}):")
        for ev in state.events:
            printed = {True: "printed", False: "never printed", None: "printed: unknown"}[ev.printed]
            addr = f" address {ev.address:#x}" if ev.address is not None else ""
            lines.append(f"  {ev.unit}[{ev.index}] {ev.kind} {ev.requester or ''}{addr} ({printed})")
    lines.append("")
    lines.append(f"faults and events from {', '.join(state.log_sources) or 'no log'}:")
    by_fault = {id(c.fault): c for c in state.correlations}
    for f in state.faults:
        lines.append(f"  {fault_line(f)}")
        c = by_fault.get(id(f))
        if c:
            if c.phys is not None:
                lines.append(f"      -> {c.device} [{c.driver}] mapped it to phys {c.phys:#x} "
                             f"({'rw' if c.writable else 'r-'}){' = ' + c.buffer if c.buffer else ''}")
            else:
                lines.append(f"      -> {c.device or '?'}: {c.note}")
    lines += [f"!! {e}" for e in state.errors]
    return "\n".join(lines)


def iommu_json(state: IommuState) -> dict:
    def plain(obj):
        d = dataclasses.asdict(obj)
        d.pop("leaves", None)
        return d

    return {"vendor": state.vendor, "units": [plain(u) for u in state.units],
            "entries": [plain(e) for e in state.entries],
            "mappings": [plain(m) for m in state.mappings], "events": [plain(e) for e in state.events],
            "faults": [plain(f) for f in state.faults],
            "correlations": [{**plain(c), "fault": None, "fault_index": state.faults.index(c.fault)}
                             for c in state.correlations],
            "log_sources": state.log_sources, "errors": state.errors}
