"""Render verdicts: text, DataFrame (CSV), JSON, the tree picture coloured by verdict.
Every claim column, header, legend line and key comes from
:data:`dumpkit.verdict.claims.CLAIMS`, in its order; comparisons of two dumps are
:mod:`dumpkit.verdict.compare`.
"""

from __future__ import annotations

from dumpkit.palette import BRIDGE, NOT_JUDGED, VERDICT_STYLES, Style, verdict_style
from dumpkit.units import iec
from dumpkit.verdict.claims import CLAIMS
from dumpkit.verdict.model import EndpointVerdict, Verdicts
from dumpkit.verdict.words import OBSERVED, word_class

__all__ = ["VERDICT_COLOURS", "bottom_line", "cut", "endpoint_rank", "endpoint_ids", "legend_lines", "ordered",
           "plot_verdict_tree", "terminal_width", "use_colour", "verdict_frame", "verdict_json", "verdict_styles",
           "verdict_table", "verdict_text"]

VERDICT_COLOURS = {k: v.face for k, v in VERDICT_STYLES.items()}   # the shared palette's fills


# --- the verdict as text ----------------------------------------------------------------------

DEFAULT_WIDTH = 100          # when the output is no terminal and COLUMNS is not set
MIN_NAME = 12
ELLIPSIS = "…"
# ANSI colours by word class (dumpkit.verdict.words.word_class); bold for rows that matter
COLOURS = {"bad": "\033[31m", "unknown": "\033[33m", "quiet": "\033[32m", "none": "\033[2m"}
BOLD, RESET = "\033[1m", "\033[0m"
# the order endpoints are listed in: DMA after the crash or faults, then unknown, then quiet
RANKS = ("faulted or wrote in the capture kernel", "DMA after the crash", "unknown", "quiet")


def use_colour(stream=None) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org)."""
    import os
    import sys

    stream = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int:
    """The terminal's width (``COLUMNS`` first, as :func:`shutil.get_terminal_size` reads it);
    :data:`DEFAULT_WIDTH` when the output is no terminal."""
    import shutil

    return max(60, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis where it was cut."""
    return text if len(text) <= width else text[:max(0, width - 1)] + ELLIPSIS


def endpoint_rank(e: EndpointVerdict) -> int:
    """0: its DMA faulted or wrote in the capture kernel; 1: DMA after the crash; 2: some
    claim unknown; 3: quiet (index into :data:`RANKS`)."""
    if e.hit_capture_kernel.value is True:
        return 0
    if e.did_dma_after_crash.value is True:
        return 1
    if any(c.of(e).value is None and c.of(e).applicable for c in CLAIMS):
        return 2
    return 3


def ordered(v: Verdicts) -> list[EndpointVerdict]:
    """Endpoints that matter first (:func:`endpoint_rank`), by BDF within each rank."""
    return sorted(v.endpoints, key=lambda e: (endpoint_rank(e), e.bdf))


def _paint(text: str, word: str, colour: bool) -> str:
    return f"{COLOURS[word_class(word)]}{text}{RESET}" if colour else text


def endpoint_ids(e: EndpointVerdict) -> str | None:
    """vendor:device in hex, None where either is unknown."""
    return f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else None


def verdict_table(v: Verdicts, width: int | None = None, colour: bool = False) -> list[str]:
    """One line per endpoint, those that matter first: BDF, ids, name and driver (cut with
    an ellipsis to fit ``width``), the four claims' top-line words."""
    width = width or terminal_width()
    eps = ordered(v)
    words = [[c.of(e).word for c in CLAIMS] for e in eps]
    cols = [max([len(c.header)] + [len(w[i]) for w in words]) + 2 for i, c in enumerate(CLAIMS)]
    driver_w = min(12, max([len("driver")] + [len(e.driver or "-") for e in eps])) + 2
    fixed = 14 + driver_w + sum(cols) - 2 + 1          # the last column unpadded; a space after the name
    ids_w = 11 if width - fixed - 11 >= MIN_NAME else 0  # ids go first when the terminal is narrow
    name_w = max(MIN_NAME, min(max([4] + [len(e.name) for e in eps]), width - fixed - ids_w))
    head = f"{'device':14}{'ids':{ids_w}}"[:14 + ids_w] + f"{'name':{name_w + 1}}{'driver':{driver_w}}" + "".join(
        f"{c.header:{w}}" for c, w in zip(CLAIMS, cols, strict=True))
    lines = [(f"{BOLD}{head.rstrip()}{RESET}" if colour else head.rstrip())]
    for e, row in zip(eps, words, strict=True):
        cells = "".join(_paint(w, w, colour) + " " * (cw - len(w)) for w, cw in zip(row, cols, strict=True))
        ids = f"{endpoint_ids(e) or '?':{ids_w}}" if ids_w else ""
        lead = (f"{e.bdf:14}{ids}{cut(e.name, name_w):{name_w + 1}}"
                f"{cut(e.driver or '-', driver_w - 2):{driver_w}}")
        if colour and endpoint_rank(e) < 2:
            lead = f"{BOLD}{lead}{RESET}"
        lines.append((lead + cells).rstrip())
    return lines


def legend_lines(width: int, endpoints: list[EndpointVerdict] | None = None) -> list[str]:
    """What each column means and each word in it (only the words the table uses, when
    ``endpoints`` are given), wrapped to ``width``."""
    import textwrap

    out = ["Legend:"]
    for claim in CLAIMS:
        used = {claim.of(e).word for e in endpoints} if endpoints is not None else None
        shown = [(w, m) for w, m in claim.words if used is None or w in used]
        out += textwrap.wrap(f"{claim.header}: {claim.means}" + "".join(f"; {w} = {m}" for w, m in shown), width,
                             initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
    out += textwrap.wrap("observed: a record of the thing itself (a logged fault, the kernel's state, a reset line); "
                         "inferred: it follows from other records (completions never processed)", width,
                         initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
    return out


def _unknown_reason(e: EndpointVerdict) -> str:
    """Why an endpoint's DMA after the crash is unknown, in a few words (grouped in the
    bottom line)."""
    ev = e.did_dma_after_crash.evidence[0] if e.did_dma_after_crash.evidence else "no evidence read"
    if e.unreadable:
        return "their struct pci_dev is unreadable"
    if ev.startswith("no driver bound"):
        return "no driver is bound (firmware may leave them mastering)"
    if ev.startswith("no debug info"):
        return ev.split(" (", 1)[0]
    if ev.startswith("no ring decoder"):
        return "no ring decoder knows their driver"
    return ev.split(":", 1)[0]


def bottom_line(v: Verdicts) -> str:
    """"N endpoints kept doing DMA after the crash; M faulted in the capture kernel; ...;
    K unknown, because …" — counted from the claims, each count with its endpoints."""
    from collections import Counter

    def names(es, most: int = 3) -> str:
        shown = ", ".join(f"{e.bdf} {e.driver or e.name}" for e in es[:most])
        return shown + (f" and {len(es) - most} more" if len(es) > most else "")

    did = sorted((e for e in v.endpoints if e.did_dma_after_crash.value is True), key=endpoint_rank)
    inferred = [e for e in did if e.did_dma_after_crash.basis != OBSERVED]
    faulted = [e for e in v.endpoints if e.hit_capture_kernel.word == "faulted"]
    wrote = [e for e in v.endpoints if e.hit_capture_kernel.word == "wrote"]
    overlap = [e for e in did if e.hit_capture_kernel.value is None and e.hit_capture_kernel.applicable]
    stopped = [e for e in did if e.stopped_by_reset.value is True]
    unknown = [e for e in v.endpoints if e.did_dma_after_crash.value is None]
    n = len(did)
    parts = [f"{n} endpoint{'s' if n != 1 else ''} kept doing DMA after the crash"
             + (f" ({names(did)}" + ("; " + ("all" if len(inferred) == n else f"{len(inferred)} of them")
                                     + " inferred from completions never processed" if inferred else "") + ")"
                if did else "")]
    parts.append(f"{len(faulted)} faulted in the capture kernel" + (f" ({names(faulted)})" if faulted else ""))
    if wrote:
        parts.append(f"{len(wrote)} kept writing while the capture kernel ran ({names(wrote)})")
    if overlap:
        parts.append(f"for {len(overlap)} nothing shows whether their DMA overlapped the capture kernel "
                     f"({names(overlap)})")
    if did:
        parts.append(f"{len(stopped)} stopped by a port reset")
    if unknown:
        why = Counter(_unknown_reason(e) for e in unknown)
        parts.append(f"{len(unknown)} unknown, because " + "; ".join(
            (f"{k}: {c}" if len(why) > 1 else k) for k, c in why.most_common()))
    return "; ".join(parts) + "."


def _claim_lines(label: str, c, width: int, colour: bool) -> list[str]:
    """A claim in the details: its word (and basis) with its phrase, then each piece of
    evidence wrapped under it."""
    import textwrap

    basis = f" ({c.basis})" if c.basis and c.applicable and c.basis not in c.word else ""
    head = f"{c.word}{basis}" + (f" — {c.phrase}" if c.phrase else "")
    indent = " " * 28
    first = textwrap.wrap(head, width - 28, break_on_hyphens=False) or [head]
    out = [f"    {label:24}" + (_paint(first[0], c.word, colour) if colour else first[0])]
    out += [indent + x for x in first[1:]]
    for ev in c.evidence:
        out += textwrap.wrap(ev, width, initial_indent=indent + "· ", subsequent_indent=indent + "  ",
                             break_on_hyphens=False)
    return out


def verdict_text(v: Verdicts, width: int | None = None, colour: bool | None = None) -> str:
    """The verdict for a reader: inputs and warnings, the table (endpoints that matter
    first), the bottom line, a legend, then each endpoint's claims with their evidence.
    ``width`` defaults to the terminal's; ``colour`` to :func:`use_colour` (a terminal and
    no ``NO_COLOR``)."""
    import textwrap

    width = width or terminal_width()
    colour = use_colour() if colour is None else colour

    def wrap(text: str, indent: str = "    ") -> list[str]:
        return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]

    logs = ", ".join(p + (f" ({v.capture_checks[p]}" + ("; the crashed kernel's own log" if p in v.own_logs else "")
                          + ")" if p in v.capture_checks else "") for p in v.capture_logs) or "none"
    lines = wrap(f"IOMMU: {v.iommu or 'none in use'}; capture log: {logs}; capture dump: {v.capture_dump or 'none'}")
    for path, m in v.capture_matches.items():
        lines += wrap(f"capture log {path}: {m['status']} with this crash: {'; '.join(m['reasons'])}")
    for w in v.warnings:
        lines += [f"{BOLD}{x}{RESET}" if colour else x for x in wrap(f"warning: {w}")]
    if v.ports_reset or v.ports_not_reset:
        lines += wrap(f"ports reset by the capture kernel: {', '.join(v.ports_reset) or 'none'}"
                      + "".join(f"; {p} not reset: {why}" for p, why in v.ports_not_reset.items()))
    lines.append("")
    lines += verdict_table(v, width, colour)
    lines.append("")
    bottom = wrap("Bottom line: " + bottom_line(v), "  ")
    lines += [f"{BOLD}{x}{RESET}" for x in bottom] if colour else bottom
    lines.append("")
    lines += legend_lines(width, v.endpoints)
    for e in ordered(v):
        lines.append("")
        head = wrap(f"{e.bdf}  {e.name}  [{e.driver or 'no driver'}]")
        lines += [f"{BOLD}{x}{RESET}" for x in head] if colour else head
        if e.says:
            lines += wrap(f"    => {e.says}", "       ")
        for claim in CLAIMS:
            lines += _claim_lines(f"{claim.label}:", claim.of(e), width, colour)
        if e.dma_owner:
            lines += wrap(f"    {'DMA owned by:':24}{e.dma_owner}", " " * 28)
        if e.decoder:
            lines.append(f"    {'judged by decoder:':24}{e.decoder}")
        if e.landed_pages:
            shown = ", ".join(f"{p:#x}" for p in e.landed_pages[:6])
            more = f" (+{len(e.landed_pages) - 6} more)" if len(e.landed_pages) > 6 else ""
            lines += wrap(f"    {'landed in pages:':24}{len(e.landed_pages)} ({iec(len(e.landed_pages) * 4096)}): "
                          f"{shown}{more}", " " * 28)
    lines += [f"!! {err}" for err in v.errors]
    return "\n".join(lines)


def _row(e: EndpointVerdict) -> dict:
    """An endpoint as a flat row: per claim its value (True/False/None), whether it applies,
    its evidence, and beside them its top-line word, basis (observed/inferred) and phrase."""
    row = {"bdf": e.bdf, "name": e.name, "driver": e.driver, "ids": endpoint_ids(e),
           "verdict": e.summary, "says": e.says, "post_crash_completions": e.post_crash_completions,
           "faults": e.faults, "reset_ports": ",".join(e.reset_ports), "landed_pages": len(e.landed_pages),
           "decoder": e.decoder, "dma_owner": e.dma_owner, "rank": RANKS[endpoint_rank(e)]}
    for spec in CLAIMS:
        c, claim = spec.of(e), spec.name
        row[claim] = c.value
        row[f"{claim}_applicable"] = c.applicable
        row[f"{claim}_evidence"] = "; ".join(c.evidence)
        row[f"{claim}_word"] = c.word
        row[f"{claim}_basis"] = c.basis
        row[f"{claim}_phrase"] = c.phrase
    return row


def verdict_frame(v: Verdicts):
    """One row per endpoint: the four claims, their evidence and the counts."""
    import pandas as pd

    return pd.DataFrame([_row(e) for e in v.endpoints]).set_index("bdf")


def _hex(value: int | None, digits: int = 4) -> str | None:
    return None if value is None else f"0x{value:0{digits}x}"


def _json_endpoint(e: EndpointVerdict) -> dict:
    """An endpoint's row with what the table leaves out: the landing pages (integers, and
    hex strings beside them as ``pci --json`` gives addresses), ids as numbers and hex, its
    rings' states, what the dump lost of it, and each claim's sources (the kernel objects
    and logs it was read from)."""
    return {**_row(e), "vendor": e.vendor, "vendor_hex": _hex(e.vendor), "device": e.device,
            "device_hex": _hex(e.device), "landed_pages": e.landed_pages,
            "landed_pages_hex": [f"{p:#x}" for p in e.landed_pages], "rings": [dict(r) for r in e.rings],
            "unreadable": getattr(e, "unreadable", None),
            # only for a dump with crashkernel=,cma ranges: the others' JSON is unchanged
            **({"capture_cma": e.capture_cma} if e.capture_cma is not None else {}),
            **{f"{c.name}_sources": list(c.of(e).sources) for c in CLAIMS}}


def verdict_json(v: Verdicts, sha256: str | None = None) -> dict:
    """The verdicts as JSON; ``dump`` names what was judged (with ``sha256`` when given);
    ``endpoints`` by BDF (``rank`` says where the text lists each); ``bottom_line`` and
    ``legend`` say it as the text does."""
    return {"dump": {**v.dump, **({"sha256": sha256} if sha256 else {})},
            "endpoints": [_json_endpoint(e) for e in v.endpoints],
            **{k: getattr(v, k) for k in ("iommu", "capture_logs", "capture_checks", "capture_matches", "capture_dump",
                                          "ports_reset", "ports_not_reset", "warnings", "errors", "own_logs")},
            "bottom_line": bottom_line(v),
            "legend": {c.name: {"header": c.header, "means": c.means, "words": dict(c.words)} for c in CLAIMS}}


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
