"""Render verdicts: text, DataFrame, the tree picture coloured by verdict, comparisons."""

from __future__ import annotations


from dumpkit.verdict import EndpointVerdict, Verdicts

__all__ = ["verdict_text", "verdict_table", "verdict_frame", "compare_frame", "plot_verdict_tree", "VERDICT_COLOURS",
           "verdict_json"]

VERDICT_COLOURS = {
    "DMA after crash, hit capture kernel": "#b2182b",
    "DMA after crash": "#ef8a62",
    "DMA after crash, stopped by reset": "#67a9cf",
    "DMA after crash, hit capture kernel, stopped by reset": "#2166ac",
    "could DMA, no evidence after crash": "#fddbc7",
    "could not DMA": "#d9d9d9",
    "unknown": "#ffff99",
}
CLAIMS = ("could_dma", "did_dma_after_crash", "hit_capture_kernel", "stopped_by_reset")


def _word(c) -> str:
    return "n/a" if not c.applicable else {True: "yes", False: "no", None: "unknown"}[c.value]


def verdict_table(v: Verdicts) -> list[str]:
    """One line per endpoint: BDF, ids and name, driver, the four claims."""
    lines = [f"{'device':14}{'ids':11}{'name':34}{'driver':13}{'could':9}{'did':9}{'hit':9}{'stopped':8}"]
    for e in v.endpoints:
        ids = f"{e.vendor:04x}:{e.device:04x}" if e.vendor is not None and e.device is not None else "?"
        lines.append(f"{e.bdf:14}{ids:11}{e.name[:33]:34}{(e.driver or '-')[:12]:13}"
                     + "".join(f"{_word(getattr(e, c)):{w}}" for c, w in zip(CLAIMS, (9, 9, 9, 8), strict=True)))
    return lines


def verdict_text(v: Verdicts) -> str:
    lines = [f"IOMMU: {v.iommu or 'none in use'}; capture log: {', '.join(v.capture_logs) or 'none'}"
             + "".join(f" ({v.capture_checks[p]})" for p in v.capture_logs if p in v.capture_checks)
             + f"; capture dump: {v.capture_dump or 'none'}"]
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


def verdict_json(v: Verdicts) -> dict:
    return {"endpoints": [{**_row(e), "landed_pages": e.landed_pages} for e in v.endpoints],
            **{k: getattr(v, k) for k in ("iommu", "capture_logs", "capture_checks", "capture_dump", "ports_reset",
                                          "ports_not_reset", "warnings", "errors")}}


def compare_frame(before: Verdicts, after: Verdicts):
    """Per endpoint (by bdf): faults, post-crash completions, ports reset and verdicts on
    both sides, and whether the verdict changed."""

    b, a = verdict_frame(before), verdict_frame(after)
    cols = ["verdict", "faults", "post_crash_completions", "reset_ports", "hit_capture_kernel", "stopped_by_reset"]
    out = b[["name", "driver"]].join(b[cols].add_suffix("_before"), how="outer").join(
        a[cols].add_suffix("_after"), how="outer")
    out["verdict_changed"] = out["verdict_before"] != out["verdict_after"]
    return out


def plot_verdict_tree(tree, verdicts: Verdicts, ax=None, title: str | None = None):
    """The PCI tree with endpoints coloured by verdict (bridges as circles)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from dumpkit.pci.render import plot_tree

    iommu = f"IOMMU: {verdicts.iommu or 'none in use'}"
    ax = plot_tree(tree, ax=ax, title=f"{title} ({iommu})" if title else iommu)
    by_bdf = {e.bdf: e for e in verdicts.endpoints}
    # recolour the endpoint squares: plot_tree draws one scatter per function, in text order
    for coll, text in zip(ax.collections, ax.texts, strict=False):
        bdf = "0000:" + text.get_text().split()[0]
        e = by_bdf.get(bdf)
        if e is not None:
            coll.set_facecolor(VERDICT_COLOURS.get(e.summary, "#ffffff"))
        elif tree.get(bdf) is not None and not tree.get(bdf).is_bridge:
            coll.set_facecolor("#ffffff")   # host bridge and other functions not judged
        text.set_fontweight("bold" if e is not None and e.did_dma_after_crash.value else "normal")
    used = {e.summary for e in verdicts.endpoints}
    handles = [Patch(facecolor=c, edgecolor="black", label=k) for k, c in VERDICT_COLOURS.items() if k in used]
    handles.append(Patch(facecolor="white", edgecolor="black", label="bridge, port or not judged"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
    plt.setp(ax.get_legend().get_texts(), fontsize=8)
    return ax
