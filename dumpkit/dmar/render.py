"""Render DMAR state: DataFrames and the text report of ``dumpkit dmar``."""

from __future__ import annotations

import dataclasses

from dumpkit.dmar.collect import DmarState

__all__ = ["units_frame", "entries_frame", "mappings_frame", "faults_frame", "dmar_text", "dmar_json"]


def units_frame(state: DmarState):
    import pandas as pd

    rows = []
    for u in state.units:
        row = {k: v for k, v in dataclasses.asdict(u).items() if k not in ("cap_decoded", "ecap_decoded")}
        row.update({f"cap.{k}": v for k, v in u.cap_decoded.items()})
        row.update({f"ecap.{k}": v for k, v in u.ecap_decoded.items()})
        row["copied_tables"] = None if u.copied_tables is None else len(u.copied_tables)
        rows.append(row)
    return pd.DataFrame(rows)


def entries_frame(state: DmarState):
    import pandas as pd

    return pd.DataFrame([{**dataclasses.asdict(e), "bdf": e.bdf} for e in state.entries])


def mappings_frame(state: DmarState):
    """One row per device: what it could reach through the IOMMU."""
    import pandas as pd

    return pd.DataFrame([{"device": m.device, "translation": m.translation, "root": m.root, "levels": m.levels,
                          **{k: m.summary.get(k) for k in ("ranges", "pages", "bytes", "writable_bytes",
                                                             "superpages")},
                          "errors": "; ".join(m.errors)} for m in state.mappings])


def faults_frame(state: DmarState):
    """One row per fault record, DMA faults with their resolution in the dump."""
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
    return pd.DataFrame(rows)


def dmar_text(state: DmarState) -> str:
    lines = []
    for u in state.units:
        lines.append(f"{u.name}: register base {u.register_base:#x}, segment {u.segment:04x}, "
                     f"{'scalable' if u.scalable_mode else 'legacy'} mode, translation "
                     f"{'on' if u.translation_on else 'off'} (pre-enabled by the previous kernel: "
                     f"{'yes' if u.translation_pre_enabled else 'no'}), root table {u.root_table:#x}, "
                     f"{len(u.domain_ids_in_use or [])} domain ids in use"
                     + (f", {len(u.copied_tables)} context entries still copied" if u.copied_tables else ""))
    lines.append("")
    lines.append(f"{'device':14}{'translation':15}{'did':>5}{'aw':>4}  {'domain':9}{'copied':8}"
                 f"{'pages':>7}{'writable':>11}")
    maps = {m.device: m for m in state.mappings}
    for e in state.entries:
        m = maps.get(e.bdf)
        pages = m.summary.get("pages") if m and m.summary else None
        wr = m.summary.get("writable_bytes") if m and m.summary else None
        lines.append(f"{e.bdf:14}{e.translation:15}{e.domain_id if e.domain_id is not None else '-':>5}"
                     f"{e.address_width or '-':>4}  {e.domain_type or '-':9}{'yes' if e.copied else 'no':8}"
                     f"{pages if pages is not None else '-':>7}{wr if wr is not None else '-':>11}")
    lines.append("")
    lines.append(f"faults and events from {', '.join(state.log_sources) or 'no log'}:")
    by_fault = {id(c.fault): c for c in state.correlations}
    for f in state.faults:
        t = f"[{f.time:12.6f}] " if f.time is not None else ""
        what = f.kind + (f" {f.unit}" if f.unit else "") + (f" ({f.iommu})" if f.kind == "table-copy" else "")
        if f.requester:
            what += f" from {f.requester}"
        if f.address is not None:
            what += f" {f.access or ''} {f.address:#x}"
        if f.reason:
            what += f": {f.reason}" + (f" ({f.reason_code:#04x})" if f.reason_code is not None else "")
        lines.append(f"  {t}{what}  <{f.source}>")
        c = by_fault.get(id(f))
        if c:
            if c.phys is not None:
                lines.append(f"      -> {c.device} [{c.driver}] mapped it to phys {c.phys:#x} "
                             f"({'rw' if c.writable else 'r-'}){' = ' + c.buffer if c.buffer else ''}")
            else:
                lines.append(f"      -> {c.device or '?'}: {c.note}")
    lines += [f"!! {e}" for e in state.errors]
    return "\n".join(lines)


def dmar_json(state: DmarState) -> dict:
    def plain(obj):
        d = dataclasses.asdict(obj)
        d.pop("leaves", None)
        return d

    return {"units": [plain(u) for u in state.units], "entries": [plain(e) for e in state.entries],
            "mappings": [plain(m) for m in state.mappings], "faults": [plain(f) for f in state.faults],
            "correlations": [{**plain(c), "fault": None, "fault_index": state.faults.index(c.fault)}
                             for c in state.correlations],
            "log_sources": state.log_sources, "errors": state.errors}
