"""Render verdicts: text, DataFrame, the tree picture coloured by verdict, comparisons.

A comparison of two dumps is collected once into :class:`Comparison` (per endpoint, the
four claims' words on both sides) by :func:`compare_verdicts` and rendered by
:func:`compare_text` (a table of at most :data:`COMPARE_WIDTH` columns) or
:func:`compare_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dumpkit.palette import BRIDGE, NOT_JUDGED, VERDICT_STYLES, Style, verdict_style
from dumpkit.verdict import EndpointVerdict, Verdicts

__all__ = ["CLAIMS", "COMPARE_WIDTH", "ClaimChange", "Comparison", "DumpSide", "EndpointComparison", "VERDICT_COLOURS", "verdict_styles",
           "claim_word", "compare_frame", "compare_json", "compare_text", "compare_verdicts", "plot_verdict_tree",
           "verdict_frame", "verdict_json", "verdict_table", "verdict_text"]

VERDICT_COLOURS = {k: v.face for k, v in VERDICT_STYLES.items()}   # the shared palette's fills
CLAIMS = ("could_dma", "did_dma_after_crash", "hit_capture_kernel", "stopped_by_reset")


def claim_word(c) -> str:
    """The claim as one short word: yes, no, unknown, or n/a when it does not apply."""
    return "n/a" if not c.applicable else {True: "yes", False: "no", None: "unknown"}[c.value]




def verdict_table(v: Verdicts) -> list[str]:
    """One line per endpoint: BDF, ids and name, driver, the four claims."""
    lines = [f"{'device':14}{'ids':11}{'name':34}{'driver':13}{'could':9}{'did':9}{'hit':9}{'stopped':8}"]
    for e in v.endpoints:
        ids = f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else "?"
        lines.append(f"{e.bdf:14}{ids:11}{e.name[:33]:34}{(e.driver or '-')[:12]:13}"
                     + "".join(f"{claim_word(getattr(e, c)):{w}}" for c, w in zip(CLAIMS, (9, 9, 9, 8), strict=True)))
    return lines


def verdict_text(v: Verdicts) -> str:
    lines = [f"IOMMU: {v.iommu or 'none in use'}; capture log: {', '.join(v.capture_logs) or 'none'}"
             + "".join(f" ({v.capture_checks[p]})" for p in v.capture_logs if p in v.capture_checks)
             + f"; capture dump: {v.capture_dump or 'none'}"]
    for path, m in v.capture_matches.items():
        lines.append(f"capture log {path}: {m['status']} with this crash: {'; '.join(m['reasons'])}")
    lines += [f"warning: {w}" for w in v.warnings]
    if v.ports_reset or v.ports_not_reset:
        lines.append(f"ports reset by the capture kernel: {', '.join(v.ports_reset) or 'none'}"
                     + "".join(f"; {p} not reset: {why}" for p, why in v.ports_not_reset.items()))
    lines.append("")
    lines += verdict_table(v)
    for e in v.endpoints:
        lines.append("")
        lines.append(f"{e.bdf}  {e.name}  [{e.driver or 'no driver'}]  => {e.summary}")
        for claim in CLAIMS:
            lines.append(f"    {claim.replace('_', ' ') + ':':24}{getattr(e, claim)}")
        if e.decoder:
            lines.append(f"    {'judged by decoder:':24}{e.decoder}")
        if e.landed_pages:
            shown = ", ".join(f"{p:#x}" for p in e.landed_pages[:6])
            more = f" (+{len(e.landed_pages) - 6} more)" if len(e.landed_pages) > 6 else ""
            lines.append(f"    {'landed in pages:':24}{shown}{more}")
    lines += [f"!! {err}" for err in v.errors]
    return "\n".join(lines)


def _row(e: EndpointVerdict) -> dict:
    row = {"bdf": e.bdf, "name": e.name, "driver": e.driver,
           "ids": f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else None,
           "verdict": e.summary, "post_crash_completions": e.post_crash_completions, "faults": e.faults,
           "reset_ports": ",".join(e.reset_ports), "landed_pages": len(e.landed_pages), "decoder": e.decoder}
    for claim in CLAIMS:
        c = getattr(e, claim)
        row[claim] = c.value
        row[f"{claim}_applicable"] = c.applicable
        row[f"{claim}_evidence"] = "; ".join(c.evidence)
    return row


def verdict_frame(v: Verdicts):
    """One row per endpoint: the four claims, their evidence and the counts."""
    import pandas as pd

    return pd.DataFrame([_row(e) for e in v.endpoints]).set_index("bdf")


def _json_endpoint(e: EndpointVerdict) -> dict:
    """An endpoint's row with what the table leaves out: the landing pages, what the dump
    lost of it, and each claim's sources (the kernel objects and logs it was read from)."""
    return {**_row(e), "landed_pages": e.landed_pages, "unreadable": getattr(e, "unreadable", None),
            **{f"{claim}_sources": list(getattr(e, claim).sources) for claim in CLAIMS}}


def verdict_json(v: Verdicts, sha256: str | None = None) -> dict:
    """The verdicts as JSON; ``dump`` names what was judged (with ``sha256`` when given)."""
    return {"dump": {**v.dump, **({"sha256": sha256} if sha256 else {})},
            "endpoints": [_json_endpoint(e) for e in v.endpoints],
            **{k: getattr(v, k) for k in ("iommu", "capture_logs", "capture_checks", "capture_matches", "capture_dump",
                                          "ports_reset", "ports_not_reset", "warnings", "errors")}}


def compare_frame(before: Verdicts, after: Verdicts):
    """Per endpoint (by bdf): faults, post-crash completions, ports reset and verdicts on
    both sides, and whether the verdict changed."""

    b, a = verdict_frame(before), verdict_frame(after)
    cols = ["verdict", "faults", "post_crash_completions", "reset_ports", "hit_capture_kernel", "stopped_by_reset"]
    out = b[["name", "driver"]].join(b[cols].add_suffix("_before"), how="outer").join(
        a[cols].add_suffix("_after"), how="outer")
    out["verdict_changed"] = out["verdict_before"] != out["verdict_after"]
    return out


def verdict_styles(tree, verdicts: Verdicts) -> dict[str, Style]:
    """Each function's style in the verdict picture: endpoints by verdict (shared palette),
    bridges and ports as such, other functions as not judged."""
    by_bdf = {e.bdf: e for e in verdicts.endpoints}
    out = {}
    for dev in tree:
        e = by_bdf.get(dev.bdf)
        out[dev.bdf] = verdict_style(e.summary) if e is not None else BRIDGE if dev.is_bridge else NOT_JUDGED
    return out


def plot_verdict_tree(tree, verdicts: Verdicts, ax=None, title: str | None = None):
    """The PCI tree with endpoints drawn by verdict (known bad, unknown, known idle in the
    shared palette: lightness and shape), ports the capture kernel reset ringed, labels of
    endpoints that did DMA after the crash in bold."""
    from dumpkit.pci.render import plot_tree

    styles = verdict_styles(tree, verdicts)
    did = {e.bdf for e in verdicts.endpoints if e.did_dma_after_crash.value}
    iommu = f"IOMMU: {verdicts.iommu or 'none in use'}"
    legend = [st for st in VERDICT_STYLES.values() if st in styles.values()] + [BRIDGE]
    if NOT_JUDGED in styles.values():
        legend.append(NOT_JUDGED)
    return plot_tree(tree, ax=ax, title=f"{title} ({iommu})" if title else iommu, style=lambda d: styles[d.bdf],
                     rings=verdicts.ports_reset, bold=lambda d: d.bdf in did, legend=legend)


# --- comparison of two dumps ------------------------------------------------------------------

COMPARE_WIDTH = 120
# short column headers, spelled out once under the table
CLAIM_HEADERS = {"could_dma": "could", "did_dma_after_crash": "did", "hit_capture_kernel": "hit",
                 "stopped_by_reset": "stopped"}
ABSENT = "absent"


@dataclass
class DumpSide:
    """One side of a comparison: the dump, what it was judged with, and its verdicts."""

    role: str
    source: str
    verdicts: Verdicts
    kernel_release: str | None = None
    build_id: str | None = None
    debuginfo: list[str] = field(default_factory=list)

    def inputs(self) -> dict:
        """Every input this side's verdicts were judged from."""
        v = self.verdicts
        return {"dump": self.source, "kernel_release": self.kernel_release, "build_id": self.build_id,
                "debuginfo": list(self.debuginfo), "capture_logs": list(v.capture_logs),
                "capture_checks": dict(v.capture_checks), "capture_dump": v.capture_dump}


@dataclass
class ClaimChange:
    """A value before and after: a claim's word, the verdict, a count (None: not known),
    ``absent`` where the endpoint is not in that dump."""

    before: str | int | None
    after: str | int | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def text(self) -> str:
        b, a = ("-" if x is None else str(x) for x in (self.before, self.after))
        return b if not self.changed else f"{b} -> {a}"


@dataclass
class EndpointComparison:
    """One endpoint on both sides; ``status`` is same, changed (a claim or the verdict),
    only before or only after."""

    bdf: str
    name: str
    driver: str | None
    ids: str | None
    claims: dict[str, ClaimChange]
    verdict: ClaimChange
    completions: ClaimChange
    faults: ClaimChange
    reset_ports: ClaimChange

    @property
    def status(self) -> str:
        if self.verdict.before == ABSENT:
            return "only after"
        if self.verdict.after == ABSENT:
            return "only before"
        # counts differ between any two runs; a change is a claim or the verdict
        return "changed" if any(c.changed for c in (*self.claims.values(), self.verdict)) else "same"

    def changes(self) -> dict[str, ClaimChange]:
        """The fields whose value differs between the sides (counts and reset ports too)."""
        fields = {**self.claims, "verdict": self.verdict, "post_crash_completions": self.completions,
                  "faults": self.faults, "reset_ports": self.reset_ports}
        return {k: c for k, c in fields.items() if c.changed}


@dataclass
class Comparison:
    """Two dumps' verdicts, endpoint by endpoint (matched by BDF, in BDF order)."""

    before: DumpSide
    after: DumpSide
    endpoints: list[EndpointComparison]

    @property
    def changed(self) -> list[EndpointComparison]:
        return [e for e in self.endpoints if e.status != "same"]


def _side_values(e: EndpointVerdict | None) -> dict[str, str | int | None]:
    if e is None:
        return {k: ABSENT for k in (*CLAIMS, "verdict", "completions", "faults", "reset_ports")}
    return {**{c: claim_word(getattr(e, c)) for c in CLAIMS}, "verdict": e.summary,
            "completions": e.post_crash_completions, "faults": e.faults,
            "reset_ports": ",".join(e.reset_ports) or None}


def _ids(e: EndpointVerdict) -> str | None:
    return f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else None


def compare_verdicts(before: DumpSide, after: DumpSide) -> Comparison:
    """Match the endpoints of both sides by BDF and collect each claim's word on both."""
    b = {e.bdf: e for e in before.verdicts.endpoints}
    a = {e.bdf: e for e in after.verdicts.endpoints}
    rows = []
    for bdf in sorted(b.keys() | a.keys()):
        eb, ea = b.get(bdf), a.get(bdf)
        vb, va = _side_values(eb), _side_values(ea)
        either = eb or ea
        rows.append(EndpointComparison(
            bdf=bdf, name=either.name, driver=(eb and eb.driver) or (ea and ea.driver), ids=_ids(either),
            claims={c: ClaimChange(vb[c], va[c]) for c in CLAIMS}, verdict=ClaimChange(vb["verdict"], va["verdict"]),
            completions=ClaimChange(vb["completions"], va["completions"]),
            faults=ClaimChange(vb["faults"], va["faults"]),
            reset_ports=ClaimChange(vb["reset_ports"], va["reset_ports"])))
    return Comparison(before, after, rows)


MARKS = {"same": " ", "changed": "*", "only before": "-", "only after": "+"}


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _side_lines(side: DumpSide, width: int) -> list[str]:
    """The side's dump and what it was judged with, wrapped to ``width`` columns."""
    import textwrap

    v = side.verdicts
    logs = ", ".join(f"{p} ({v.capture_checks[p]})" if p in v.capture_checks else p
                     for p in v.capture_logs) or "none"
    items = [f"kernel {side.kernel_release or 'unknown'}; IOMMU {v.iommu or 'none in use'}",
             f"ports reset: {', '.join(v.ports_reset) or 'none'}", f"capture log: {logs}",
             *(f"warning: {w}" for w in v.warnings), *(f"!! {e}" for e in v.errors)]
    lines = [f"{side.role}: {side.source}"]
    for item in items:
        lines += textwrap.wrap(item, width, initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False) or [""]
    return lines


def compare_text(cmp: Comparison, width: int = COMPARE_WIDTH) -> str:
    """Both dumps' inputs, then one line per endpoint (at most ``width`` columns): a mark
    (``*`` changed, ``-`` only before, ``+`` only after), BDF, name, driver, the four
    claims as yes/no/unknown/n/a (``before -> after`` where they differ), post-crash
    completions and faults; then each changed endpoint's verdict before and after."""
    heads = [*CLAIM_HEADERS.values(), "completions", "faults"]
    cells = [[*(e.claims[c].text() for c in CLAIMS), e.completions.text(), e.faults.text()] for e in cmp.endpoints]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) + 2 for i, h in enumerate(heads)]
    driver_w = max([len("driver")] + [len(e.driver or "-") for e in cmp.endpoints])
    driver_w = min(driver_w, 12) + 2
    fixed = 2 + 14 + driver_w + sum(widths)
    name_w = max(12, min(32, width - fixed - 1, max([4] + [len(e.name) for e in cmp.endpoints])))
    lines = _side_lines(cmp.before, width) + _side_lines(cmp.after, width) + [""]
    header = f"  {'device':14}{'name':{name_w + 1}}{'driver':{driver_w}}" + "".join(
        f"{h:{w}}" for h, w in zip(heads, widths, strict=True))
    lines.append(header.rstrip())
    for e, row in zip(cmp.endpoints, cells, strict=True):
        line = (f"{MARKS[e.status]} {e.bdf:14}{_cut(e.name, name_w):{name_w + 1}}"
                f"{_cut(e.driver or '-', driver_w - 2):{driver_w}}"
                + "".join(f"{c:{w}}" for c, w in zip(row, widths, strict=True)))
        lines.append(line.rstrip())
    lines.append("")
    lines.append("could: could DMA at the crash; did: DMA after the crash; hit: hit the capture kernel; "
                 "stopped: stopped by a port reset")
    lines.append("a -> b: before -> after; * changed, - only in before, + only in after")
    changed = cmp.changed
    lines.append(f"{len(changed)} of {len(cmp.endpoints)} endpoints changed" + (":" if changed else ""))
    for e in changed:
        lines.append(f"  {e.bdf}: {e.verdict.before} -> {e.verdict.after}")
    return "\n".join(lines)


def compare_json(cmp: Comparison) -> dict:
    """Both sides' inputs and verdicts (as :func:`verdict_json`), every endpoint's claims on
    both sides, and the changes."""
    def endpoint(e: EndpointComparison) -> dict:
        return {"bdf": e.bdf, "name": e.name, "driver": e.driver, "ids": e.ids, "status": e.status,
                "claims": {c: {"before": ch.before, "after": ch.after, "changed": ch.changed}
                           for c, ch in e.claims.items()},
                "verdict": {"before": e.verdict.before, "after": e.verdict.after},
                "post_crash_completions": {"before": e.completions.before, "after": e.completions.after},
                "faults": {"before": e.faults.before, "after": e.faults.after},
                "reset_ports": {"before": e.reset_ports.before, "after": e.reset_ports.after}}

    return {"before": {"inputs": cmp.before.inputs(), "verdicts": verdict_json(cmp.before.verdicts)},
            "after": {"inputs": cmp.after.inputs(), "verdicts": verdict_json(cmp.after.verdicts)},
            "endpoints": [endpoint(e) for e in cmp.endpoints],
            "changes": [{"bdf": e.bdf, "status": e.status,
                         "fields": {k: {"before": c.before, "after": c.after} for k, c in e.changes().items()}}
                        for e in cmp.changed],
            "summary": {"endpoints": len(cmp.endpoints), "changed": len(cmp.changed)}}
