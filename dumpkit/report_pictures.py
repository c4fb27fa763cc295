"""Pictures of the report that answer their question in words, not in hatches alone:

- :func:`claim_columns` adds two columns of words beside the verdict tree, "DMA after
  the crash" and "in the capture kernel", so the two claims are read apart on every
  endpoint (the fill and hatch of :mod:`dumpkit.palette` stay as they are);
- :func:`plot_claim_changes` draws what changed between two dumps: per endpoint, each
  claim's word before and after (``no → yes``), the changed cells dark and framed, the
  fault and completion counts beside them.
"""

from __future__ import annotations

from dumpkit.verdict import CLAIMS, Verdicts, claim_word
from dumpkit.verdict.compare import DumpSide, compare_verdicts

__all__ = ["TREE_COLUMNS", "claim_columns", "plot_claim_changes"]

#: the claims written beside the tree, with their column headers
TREE_COLUMNS = {"did_dma_after_crash": "DMA after\nthe crash", "hit_capture_kernel": "in the capture\nkernel"}
_COLUMN_IN = 1.3        # inches per word column


def claim_columns(ax, verdicts: Verdicts) -> list:
    """Write, right of each endpoint's label in a verdict tree (of
    :func:`dumpkit.verdict.render.plot_verdict_tree`), its "DMA after the crash" and "in
    the capture kernel" claim words, under a header; the figure widens to hold them.

    :return: the text artists added (gid "claim BDF CLAIM" for each word)
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    nodes = {c.get_gid()[5:]: tuple(c.get_offsets()[0]) for c in ax.collections
             if (c.get_gid() or "").startswith("node ")}
    if not nodes:
        return []
    label_end_px = max(t.get_window_extent(renderer).x1 for t in ax.texts)
    x0_in = fig.get_figwidth()
    need_in = label_end_px / fig.dpi + 0.3 + _COLUMN_IN * len(TREE_COLUMNS) + 0.2
    if need_in > x0_in:          # widen, keeping inches per data unit (labels keep their room)
        xmin, xmax = ax.get_xlim()
        pos = ax.get_position()
        left_in, axes_in = pos.x0 * x0_in, pos.width * x0_in
        per_unit = axes_in / (xmax - xmin)
        fig.set_figwidth(need_in)
        new_axes_in = need_in - left_in - (1 - pos.x1) * x0_in
        ax.set_position([left_in / need_in, pos.y0, new_axes_in / need_in, pos.height])
        ax.set_xlim(xmin, xmin + new_axes_in / per_unit)
    # pixel -> data x (after any widening)
    inv = ax.transData.inverted()
    start = inv.transform((label_end_px, 0))[0]
    unit_in = (ax.get_xlim()[1] - ax.get_xlim()[0]) / (ax.get_position().width * fig.get_figwidth())
    xs = [start + (0.3 + _COLUMN_IN * (i + 0.5)) * unit_in for i in range(len(TREE_COLUMNS))]
    top = max(y for _x, y in nodes.values())
    added = []
    for x, (claim, header) in zip(xs, TREE_COLUMNS.items(), strict=True):
        added.append(ax.text(x, top + 0.55, header, ha="center", va="bottom", fontsize=8.5, fontweight="bold",
                             gid=f"header {claim}"))
        for e in verdicts.endpoints:
            if e.bdf not in nodes:
                continue
            c = getattr(e, claim)
            word = claim_word(c)
            added.append(ax.text(x, nodes[e.bdf][1], word, ha="center", va="center", fontsize=9,
                                 fontweight="bold" if c.value else "normal",
                                 color="black" if c.value or c.value is None else "#555555",
                                 gid=f"claim {e.bdf} {claim}",
                                 bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="black", lw=1.2)
                                 if c.value else None))
    return added


def plot_claim_changes(before: Verdicts, after: Verdicts, names: tuple[str, str] = ("before", "after"),
                       only_changed: bool = True):
    """What changed between two dumps' verdicts: one row per endpoint (those whose claims
    or verdict changed, with ``only_changed``), one column per claim plus faults and
    completions; a cell reads ``before → after`` where it changed (dark, framed) and the
    one word where it did not.

    :return: the matplotlib figure (a sentence in it when nothing changed)
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cmp = compare_verdicts(DumpSide(names[0], names[0], before), DumpSide(names[1], names[1], after))
    rows = [e for e in cmp.endpoints if e.status != "same"] if only_changed else cmp.endpoints
    cols = [*(c.name for c in CLAIMS), "faults", "completions"]
    heads = [c.short for c in CLAIMS] + ["faults", "completions\nnot processed"]
    width_in = [1.75] * len(CLAIMS) + [1.0, 1.4]
    label_in = 3.2
    fig_w = label_in + sum(width_in) + 0.3
    fig_h = 0.6 * max(len(rows), 1) + 1.7
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.set_axis_off()
    ax.set_xlim(0, fig_w)
    ax.set_ylim(fig_h, 0)
    ax.text(0.1, 0.25, f"What changed from {names[0]} to {names[1]}: {len(rows) if only_changed else len(cmp.changed)}"
                       f" of {len(cmp.endpoints)} endpoints", fontsize=11, fontweight="bold", va="center")
    if not rows:
        ax.text(0.1, 0.9, "no claim and no verdict changed", fontsize=10, va="center")
        return fig
    xs, x = [], label_in
    for w in width_in:
        xs.append(x)
        x += w
    for x, w, h in zip(xs, width_in, heads, strict=True):
        ax.text(x + w / 2, 0.85, h, ha="center", va="center", fontsize=9, fontweight="bold")
    for i, e in enumerate(rows):
        y = 1.35 + 0.6 * i
        ax.text(0.1, y, f"{e.bdf[5:]} {(e.driver or 'no driver')}", fontsize=9, va="center", fontweight="bold")
        ax.text(0.1, y + 0.2, e.name[:40] + ("…" if len(e.name) > 40 else ""), fontsize=7.5, va="center",
                color="#444444")
        for x, w, c in zip(xs, width_in, cols, strict=True):
            change = e.claims[c] if c in e.claims else e.faults if c == "faults" else e.completions
            changed = change.changed
            claim = c in e.claims       # counts differ between any two runs: drawn lighter than claims
            face = ("#08306b" if claim else "#c6dbef") if changed else "#f3f3f3"
            ax.add_patch(Rectangle((x + 0.05, y - 0.2), w - 0.1, 0.4, facecolor=face,
                                   edgecolor="black" if changed else "#cccccc", lw=1.5 if changed else 0.6,
                                   gid=f"cell {e.bdf} {c}" + (" changed" if changed else "")))
            text = change.text().replace(" -> ", " → ")
            ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=9,
                    color="white" if changed and claim else "black", fontweight="bold" if changed else "normal")
    ax.text(0.1, fig_h - 0.2, "dark, framed: the claim changed (before → after); light, framed: a count changed; "
                              "grey: the same on both sides",
            fontsize=8, color="#333333", va="center")
    return fig
