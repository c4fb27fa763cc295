"""Two dumps' verdicts compared (before/after a patch): collected once into
:class:`Comparison` (per endpoint, each claim's words on both sides) by
:func:`compare_verdicts` and rendered by :func:`compare_text` (a table of at most
:data:`COMPARE_WIDTH` columns), :func:`compare_frame` (CSV) or :func:`compare_json`, which
all carry every claim of :data:`dumpkit.verdict.claims.CLAIMS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dumpkit.verdict.claim import claim_word
from dumpkit.verdict.claims import CLAIMS, NAMES
from dumpkit.verdict.model import EndpointVerdict, Verdicts
from dumpkit.verdict.render import cut, endpoint_ids, verdict_json

__all__ = ["COMPARE_WIDTH", "ClaimChange", "Comparison", "DumpSide", "EndpointComparison", "compare_frame",
           "compare_json", "compare_text", "compare_verdicts"]

COMPARE_WIDTH = 120
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
    # each claim's top-line word (Claim.word: faulted, yes, inferred, no evidence, ...) on both sides
    words: dict[str, ClaimChange] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.verdict.before == ABSENT:
            return "only after"
        if self.verdict.after == ABSENT:
            return "only before"
        # counts differ between any two runs; a change is a claim or the verdict
        return "changed" if any(c.changed for c in (*self.claims.values(), *self.words.values(),
                                                      self.verdict)) else "same"

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
        return {k: ABSENT for k in (*NAMES, *(f"{c}_word" for c in NAMES), "verdict", "completions", "faults",
                                    "reset_ports")}
    return {**{c.name: claim_word(c.of(e)) for c in CLAIMS}, **{f"{c.name}_word": c.of(e).word for c in CLAIMS},
            "verdict": e.summary,
            "completions": e.post_crash_completions, "faults": e.faults,
            "reset_ports": ",".join(e.reset_ports) or None}


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
            bdf=bdf, name=either.name, driver=(eb and eb.driver) or (ea and ea.driver), ids=endpoint_ids(either),
            claims={c: ClaimChange(vb[c], va[c]) for c in NAMES}, verdict=ClaimChange(vb["verdict"], va["verdict"]),
            completions=ClaimChange(vb["completions"], va["completions"]),
            faults=ClaimChange(vb["faults"], va["faults"]),
            reset_ports=ClaimChange(vb["reset_ports"], va["reset_ports"]),
            words={c: ClaimChange(vb[f"{c}_word"], va[f"{c}_word"]) for c in NAMES}))
    return Comparison(before, after, rows)


MARKS = {"same": " ", "changed": "*", "only before": "-", "only after": "+"}


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
    claims' top-line words as the verdict table gives them (``before -> after`` where they differ), post-crash
    completions and faults; then each changed endpoint's verdict before and after."""
    import textwrap

    heads = [*(c.header for c in CLAIMS), "completions", "faults"]
    cells = [[*(e.words[c].text() for c in NAMES), e.completions.text(), e.faults.text()] for e in cmp.endpoints]
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
        line = (f"{MARKS[e.status]} {e.bdf:14}{cut(e.name, name_w):{name_w + 1}}"
                f"{cut(e.driver or '-', driver_w - 2):{driver_w}}"
                + "".join(f"{c:{w}}" for c, w in zip(row, widths, strict=True)))
        lines.append(line.rstrip())
    lines.append("")
    lines += textwrap.wrap("; ".join(f"{c.header}: {c.means}" for c in CLAIMS) + " (words as in verdict's "
                           "legend: faulted, wrote, yes, inferred, no evidence, ...)", width, break_on_hyphens=False)
    lines.append("a -> b: before -> after; * changed, - only in before, + only in after")
    changed = cmp.changed
    lines.append(f"{len(changed)} of {len(cmp.endpoints)} endpoints changed" + (":" if changed else ""))
    for e in changed:
        lines.append(f"  {e.bdf}: {e.verdict.before} -> {e.verdict.after}")
    return "\n".join(lines)


def compare_frame(cmp: Comparison):
    """The comparison as a table, one row per endpoint (by bdf): what :func:`compare_json`
    gives per endpoint, flat: its status, then for each side the verdict, the counts, the
    reset ports, and each of the four claims as its plain word (``could_dma_before``: yes,
    no, unknown, n/a; ``absent`` where the endpoint is not in that dump) and its top-line
    word (``could_dma_word_before``); and whether the verdict changed. Counts stay whole
    numbers (the columns hold objects, so a missing count is empty, not NaN)."""
    import pandas as pd

    def side(e: EndpointComparison, role: str) -> dict:
        pick = (lambda ch: ch.before) if role == "before" else (lambda ch: ch.after)
        return {f"verdict_{role}": pick(e.verdict), f"faults_{role}": pick(e.faults),
                f"post_crash_completions_{role}": pick(e.completions), f"reset_ports_{role}": pick(e.reset_ports),
                **{f"{c}_{role}": pick(e.claims[c]) for c in NAMES},
                **{f"{c}_word_{role}": pick(e.words[c]) for c in NAMES}}

    rows = [{"bdf": e.bdf, "name": e.name, "driver": e.driver, "ids": e.ids, "status": e.status,
             **side(e, "before"), **side(e, "after"), "verdict_changed": e.verdict.changed}
            for e in cmp.endpoints]
    return pd.DataFrame(rows, dtype=object).set_index("bdf")


def compare_json(cmp: Comparison) -> dict:
    """Both sides' inputs and verdicts (as :func:`verdict_json`), every endpoint's claims on
    both sides, and the changes."""
    def endpoint(e: EndpointComparison) -> dict:
        return {"bdf": e.bdf, "name": e.name, "driver": e.driver, "ids": e.ids, "status": e.status,
                "claims": {c: {"before": ch.before, "after": ch.after, "changed": ch.changed}
                           for c, ch in e.claims.items()},
                "words": {c: {"before": ch.before, "after": ch.after, "changed": ch.changed}
                          for c, ch in e.words.items()},
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
