"""Tables and sentences of the report, formatted for a person: the conclusion first (one
sentence per endpoint at risk), then tables whose cells read as words — "—" for a missing
value, yes/no for flags, integers as integers, addresses and register values in hex
(ranges as ``0x..-0x..``), "none" instead of an empty table — and that wrap instead of
scrolling sideways.

Everything here reads the verdict objects (:class:`dumpkit.verdict.Verdicts`): each
claim's own word and phrase (those of the verdict text) and the verdict text's bottom
line and order; no claim wording is decided here.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Iterable, Mapping, Sequence

from dumpkit.verdict import CLAIMS, EndpointVerdict, Verdicts
from dumpkit.verdict.render import bottom_line, ordered

__all__ = ["DASH", "Table", "CLAIM_QUESTIONS", "at_risk", "cell_text", "claim_table", "conclusion",
           "change_conclusion", "evidence_table", "facts_table", "faults_table", "iommu_tables", "modules_table",
           "ordered", "pci_table", "table", "unknown_table"]

DASH = "—"
#: the question each claim answers, as a column header
CLAIM_QUESTIONS = {c.name: c.question for c in CLAIMS}

# columns whose integers kernel engineers read in hex (addresses, registers, ranges)
HEX_WORDS = ("address", "addr", "phys", "base", "root", "page_table", "reserved", "segments", "elfcorehdr",
             "cap.cap", "cap.ecap", "command", "status", "pdev", "devcap", "crash_kernel_low", "crash_kernel_cma",
             "landed", "mmio")
# ...unless the name says it is a count
COUNT_WORDS = ("count", "bytes", "pages", "records", "number", "bits", "ranges")

_CSS = """<style>
table.dk-table { border-collapse: collapse; margin: 0.4em 0 1em 0; max-width: 100%; table-layout: auto;
  font-size: 13px; }
table.dk-table th, table.dk-table td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left;
  vertical-align: top; white-space: normal; overflow-wrap: anywhere; word-break: normal; }
table.dk-table th { background: #f3f3f3; }
table.dk-table td.dk-num { text-align: right; font-variant-numeric: tabular-nums; }
table.dk-table caption { text-align: left; font-weight: bold; padding: 2px 0; }
div.dk-conclusion { font-size: 15px; line-height: 1.45; max-width: 100%; overflow-wrap: anywhere; }
div.dk-conclusion p.dk-bottom { font-size: 17px; font-weight: bold; margin: 0.2em 0 0.5em 0; }
div.dk-conclusion li { margin-bottom: 0.35em; }
</style>"""


HEX_NAMES = {"cap", "ecap"}


def _is_hex_column(column: str) -> bool:
    low = column.lower()
    if low in HEX_NAMES:
        return True
    return any(w in low for w in HEX_WORDS) and not any(w in low for w in COUNT_WORDS)


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:     # pragma: no cover - pandas comes with the notebook extras
        return False


def cell_text(value, column: str = "", hex_int: bool | None = None) -> str:
    """One value as a reader expects it: "—" when missing or empty, yes/no for a flag,
    an integral float as an integer, an int in hex in an address/register column (or when
    ``hex_int``), a pair of ints there as a range ``0x..-0x..``, sequences joined by commas."""
    hexed = _is_hex_column(column) if hex_int is None else hex_int
    if _missing(value) or value == "" or (isinstance(value, (list, tuple, set, dict)) and not value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):   # numpy scalars
        try:
            return cell_text(value.item(), column, hex_int)
        except (AttributeError, ValueError):
            pass
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2 ** 53:
            return cell_text(int(value), column, hex_int)
        return f"{value:.6g}"
    if isinstance(value, int):
        if "bytes" in column.lower() and hex_int is None and value >= 1024:
            from dumpkit.units import iec

            return iec(value)
        return f"{value:#x}" if hexed and value >= 0 else str(value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value) and hexed:
        if "segment" in column.lower():     # (start, size) of a kexec segment
            return f"{value[0]:#x}-{value[0] + value[1] - 1:#x}"
        return f"{value[0]:#x}-{value[1]:#x}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {cell_text(v, str(k))}" for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return ", ".join(cell_text(v, column, hex_int) for v in value)
    return str(value)


def _numeric(text: str) -> bool:
    return text != DASH and (text.lstrip("-").isdigit() or text.startswith("0x"))


@dataclasses.dataclass
class Table:
    """Rows of already-formatted cells, shown as HTML in a notebook or a report (wrapping,
    never scrolling sideways) and as aligned text elsewhere; "none" (or ``empty``) when it
    has no row."""

    columns: list[str]
    rows: list[list[str]]
    caption: str | None = None
    empty: str = "none"

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        if not self.rows:
            cap = f"<b>{html.escape(self.caption)}</b>: " if self.caption else ""
            return f"{_CSS}<p class='dk-empty'>{cap}{html.escape(self.empty)}</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td class='dk-num'>{html.escape(v)}</td>" if _numeric(v)
                                        else f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f"{_CSS}<table class='dk-table'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        if not self.rows:
            return f"{self.caption + ': ' if self.caption else ''}{self.empty}"
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in self.rows]
        return "\n".join(([self.caption] if self.caption else []) + lines)

    __repr__ = __str__


def table(rows, columns: Sequence[str] | None = None, names: Mapping[str, str] | None = None,
          hex_columns: Iterable[str] = (), plain_columns: Iterable[str] = (), caption: str | None = None,
          empty: str = "none", index: str | None = None) -> Table:
    """A :class:`Table` of dict rows or a DataFrame (its index kept as column ``index``).

    :param columns: which columns, in order (default: all, in order of appearance)
    :param names: display names of columns
    :param hex_columns: columns shown in hex besides those :data:`HEX_WORDS` name
    :param plain_columns: columns never shown in hex
    """
    if hasattr(rows, "to_dict"):        # a DataFrame
        frame = rows.reset_index() if index else rows
        if index:
            frame = frame.rename(columns={frame.columns[0]: index})
        rows = frame.to_dict("records")
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    hexed, plain, names = set(hex_columns), set(plain_columns), dict(names or {})
    cells = [[cell_text(r.get(c), c, True if c in hexed else False if c in plain else None) for c in columns]
             for r in rows]
    return Table([names.get(c, c.replace("_", " ")) for c in columns], cells, caption, empty)


def facts_table(facts: Mapping, caption: str | None = None, skip: Iterable[str] = ("unknown",)) -> Table:
    """A two-column table (field, value) of a dataclass or a mapping; a field dumpkit
    could not determine shows its reason (from the ``unknown`` mapping) as the value."""
    if dataclasses.is_dataclass(facts):
        facts = dataclasses.asdict(facts)
    unknown = facts.get("unknown") or {}
    rows = []
    for k, v in facts.items():
        if k in skip:
            continue
        text = cell_text(v, k)
        if k in unknown and text == DASH:
            text = f"unknown: {unknown[k]}"
        rows.append([k.replace("_", " "), text])
    rows += [[k.replace("_", " "), f"unknown: {why}"] for k, why in unknown.items() if k not in facts]
    return Table(["field", "value"], rows, caption)


def unknown_table(unknown: Mapping[str, str]) -> Table:
    """Fields dumpkit could not determine, with why; "none" when it determined them all."""
    return Table(["field", "why unknown"], [[k.replace("_", " "), str(v)] for k, v in unknown.items()],
                 empty="none: every field was determined")


# --- verdicts -------------------------------------------------------------------------------

def _ids(e: EndpointVerdict) -> str:
    return f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else DASH


def at_risk(v: Verdicts) -> list[EndpointVerdict]:
    """Endpoints that did DMA after the crash, or that the capture kernel logged DMA
    faults from: those the conclusion names one by one."""
    return [e for e in ordered(v) if e.did_dma_after_crash.value or e.hit_capture_kernel.value]


def _first(evidence: Sequence[str]) -> str:
    return evidence[0] if evidence else ""


def _claim_phrase(c) -> str:
    """The claim's top-line word (the verdict text's: "faulted", "yes, inferred", …) and
    what it rests on."""
    why = c.phrase or _first(c.evidence)
    return f"<b>{html.escape(c.word)}</b>" + (f" ({html.escape(why)})" if why else "")


def _device(e: EndpointVerdict) -> str:
    return f"{e.bdf} {e.name} [{e.driver or 'no driver'}]"


def endpoint_sentence(e: EndpointVerdict) -> str:
    """One HTML sentence: the device, its driver, the evidence of its DMA after the crash,
    what happened in the capture kernel and whether a reset stopped it."""
    parts = [f"<b>{html.escape(_device(e))}</b>: "
             f"{CLAIM_QUESTIONS['did_dma_after_crash']} {_claim_phrase(e.did_dma_after_crash)}; "
             f"{CLAIM_QUESTIONS['hit_capture_kernel']}: {_claim_phrase(e.hit_capture_kernel)}; "
             f"{CLAIM_QUESTIONS['stopped_by_reset']}: {_claim_phrase(e.stopped_by_reset)}."]
    if e.dma_owner:
        parts.append(f" Its DMA was driven by {html.escape(e.dma_owner)}, not by a kernel driver.")
    if e.landed_pages:
        parts.append(f" Its DMA landed in {len(e.landed_pages)} physical page(s), first at {e.landed_pages[0]:#x}.")
    return "".join(parts)


class Html:
    """An HTML fragment shown as such in a notebook and a report."""

    def __init__(self, text: str, plain: str = ""):
        self.text, self.plain = text, plain

    def _repr_html_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.plain or self.text


def conclusion(v: Verdicts, info=None, title: str | None = None) -> Html:
    """The report's first block: the bottom line, one sentence per endpoint at risk
    (device, driver, evidence, what happened in the capture kernel, reset), the endpoints
    left unknown and why, and what the verdict was judged from."""
    risky = at_risk(v)
    unknown = [e for e in ordered(v) if e not in risky and e.did_dma_after_crash.value is None]
    out = [_CSS, "<div class='dk-conclusion'>"]
    if title:
        out.append(f"<h2>{html.escape(title)}</h2>")
    out.append(f"<p class='dk-bottom'>{html.escape(bottom_line(v))}</p>")
    if risky:
        out.append("<ul>" + "".join(f"<li>{endpoint_sentence(e)}</li>" for e in risky) + "</ul>")
    else:
        out.append("<p>No endpoint shows DMA after the crash.</p>")
    if unknown:
        items = "".join(f"<li>{html.escape(_device(e))}: {_claim_phrase(e.did_dma_after_crash)}</li>"
                        for e in unknown)
        out.append(f"<p>Unknown whether they did DMA after the crash:</p><ul>{items}</ul>")
    rest = [e for e in v.endpoints if e not in risky and e not in unknown]
    if rest:
        words: dict[str, int] = {}
        for e in rest:
            words[e.summary] = words.get(e.summary, 0) + 1
        out.append("<p>The other endpoints: " + html.escape(", ".join(f"{n} {w}" for w, n in words.items())) + ".</p>")
    judged = [f"IOMMU {v.iommu or 'none in use'}"]
    judged.append("capture log " + (", ".join(f"{p} ({v.capture_checks.get(p, 'used')})" for p in v.capture_logs)
                                    or "none"))
    if v.capture_dump:
        judged.append(f"capture dump {v.capture_dump}")
    if v.ports_reset:
        judged.append(f"ports reset by the capture kernel: {', '.join(v.ports_reset)}")
    if info is not None:
        crash = getattr(info, "panic_message", None)
        when = getattr(info, "crash_time", None)
        judged.insert(0, f"kernel {getattr(info, 'kernel_release', '?')}"
                         + (f", crashed {when:%Y-%m-%d %H:%M:%S %Z}" if when else "")
                         + (f": {crash}" if crash else ""))
    out.append("<p style='color:#444'>Judged from: " + html.escape("; ".join(judged)) + ".</p>")
    for w in v.warnings:
        out.append(f"<p><b>warning:</b> {html.escape(w)}</p>")
    for err in v.errors:
        out.append(f"<p><b>error:</b> {html.escape(err)}</p>")
    out.append("</div>")
    plain = "\n".join([bottom_line(v)] + [_device(e) for e in risky])
    return Html("".join(out), plain)


def claim_table(v: Verdicts) -> Table:
    """One row per endpoint, those that matter first: device, ids, driver, the four claims
    in words, faults and completions left in its rings."""
    rows = []
    for e in ordered(v):
        rows.append([e.bdf, e.name, e.driver or DASH, _ids(e), *(c.of(e).word for c in CLAIMS),
                     str(e.faults), cell_text(e.post_crash_completions), e.summary])
    return Table(["device", "name", "driver", "ids", *CLAIM_QUESTIONS.values(), "faults",
                  "completions not processed", "verdict"], rows)


def evidence_table(v: Verdicts) -> Table:
    """Per endpoint and claim, its word and evidence (one row per claim)."""
    rows = []
    for e in ordered(v):
        for c in CLAIMS:
            claim = c.of(e)
            rows.append([e.bdf if c == CLAIMS[0] else "", c.question, claim.word,
                         "; ".join(claim.evidence) or DASH])
    return Table(["device", "claim", "word", "evidence"], rows)


# --- the dump's other tables --------------------------------------------------------------

def modules_table(modules) -> Table:
    """Loaded modules: name, address (hex), debug file and its status."""
    rows = [dataclasses.asdict(m) if dataclasses.is_dataclass(m) else dict(m) for m in modules]
    return table(rows, empty="no loadable modules in this kernel")


PCI_COLUMNS = ["bdf", "device_name", "driver", "pcie_port_type", "parent", "enable_count", "is_busmaster",
               "upstream_busmaster", "saved_command", "power_state", "error_state", "iommu_group", "could_dma",
               "could_dma_reason"]


def pci_table(tree) -> Table:
    """The DMA-relevant state of every function: driver, enable count, Bus Master (its own
    and up to the root), the saved command register (hex), power, IOMMU group, could DMA."""
    from dumpkit.pci.render import to_frame

    frame = to_frame(tree)
    frame = frame.reset_index() if "bdf" not in frame.columns else frame
    cols = [c for c in PCI_COLUMNS if c in frame.columns]
    return table(frame, cols, names={"device_name": "name", "pcie_port_type": "port type", "enable_count": "enabled",
                                     "is_busmaster": "bus master", "upstream_busmaster": "bus master up to root",
                                     "saved_command": "command register (last saved copy)", "iommu_group": "IOMMU group",
                                     "could_dma": "could DMA", "could_dma_reason": "why"},
                 plain_columns=("iommu_group", "enable_count"))


def faults_table(state, dma_only: bool = True) -> Table:
    """IOMMU faults resolved to the device and to what their address mapped to in the
    crashed kernel (its buffer); with ``dma_only``, DMA faults only (table copies and
    status lines are in the timeline)."""
    from dumpkit.iommu.render import faults_frame

    frame = faults_frame(state)
    if frame.empty:
        return Table([], [], empty="no IOMMU fault in the logs")
    if dma_only:
        frame = frame[frame["address"].notna() | frame["requester"].notna()]
    cols = ["time", "source", "kind", "requester", "device", "driver", "access", "address", "phys", "buffer",
            "reason", "note"]
    return table(frame, [c for c in cols if c in frame.columns], hex_columns=("address", "phys"),
                 names={"time": "time (s)", "address": "IOVA", "phys": "physical", "buffer": "buffer it hit"},
                 empty="no DMA fault in the logs")


def iommu_tables(state) -> list[Table]:
    """The IOMMU state as tables: each unit's facts (registers in hex), each device's
    translation entry (page table in hex) and what its mappings let it reach."""
    from dumpkit.iommu.render import entries_frame, mappings_frame

    if not state.units:
        return [Table([], [], empty=f"no IOMMU unit in the dump (IOMMU: {state.vendor or 'none in use'})")]
    out = []
    for u in state.units:
        facts = {k: v for k, v in dataclasses.asdict(u).items() if k not in ("capabilities", "flags")}
        facts.update({k: v for k, v in u.capabilities.items() if not isinstance(v, list)})
        facts.update(u.flags)
        out.append(facts_table(facts, caption=f"unit {u.name}"))
    entries = entries_frame(state)
    out.append(table(entries, [c for c in entries.columns if c not in ("sources", "device")], caption="translation entries",
                     hex_columns=("page_table",), plain_columns=("domain_id",), empty="no translation entry read"))
    maps = mappings_frame(state)
    out.append(table(maps, caption="what each device's mappings let it reach", hex_columns=("root",),
                     names={"writable_bytes": "writable bytes"}, empty="no mapping read"))
    return out


def change_conclusion(before: Verdicts, after: Verdicts, names: tuple[str, str] = ("before", "after")) -> Html:
    """The before/after report's first block: each side's bottom line, then one sentence
    per endpoint whose claims changed (its device, driver and each claim before → after)."""
    from dumpkit.verdict.compare import DumpSide, compare_verdicts

    cmp = compare_verdicts(DumpSide(names[0], names[0], before), DumpSide(names[1], names[1], after))
    out = [_CSS, "<div class='dk-conclusion'>"]
    changed = cmp.changed
    out.append(f"<p class='dk-bottom'>{len(changed)} of {len(cmp.endpoints)} endpoints changed from "
               f"{html.escape(names[0])} to {html.escape(names[1])}.</p>")
    items = []
    for e in changed:
        diffs = [f"{CLAIM_QUESTIONS[c]} <b>{html.escape(str(ch.before))} → {html.escape(str(ch.after))}</b>"
                 for c, ch in e.claims.items() if ch.changed]
        counts = [f"{what} {html.escape(ch.text().replace(' -> ', ' → '))}"
                  for what, ch in (("faults", e.faults), ("completions not processed", e.completions)) if ch.changed]
        device = f"{e.bdf} {e.name} [{e.driver or 'no driver'}]"
        items.append(f"<li><b>{html.escape(device)}</b> ({e.status}): "
                     + "; ".join(diffs + counts or ["the verdict"]) + ".</li>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    for name, v in zip(names, (before, after), strict=True):
        out.append(f"<p><b>{html.escape(name)}:</b> {html.escape(bottom_line(v))}</p>")
    out.append("</div>")
    return Html("".join(out), f"{len(changed)} of {len(cmp.endpoints)} endpoints changed")
