"""One palette for every dumpkit picture (the PCI tree, the verdict tree, the notebooks'
charts), readable in grey-scale and by the colour-blind.

Endpoints fall in three classes, told apart by lightness *and* marker shape, never by hue
alone: known-bad (dark fill, square: DMA after the crash, or could DMA at crash time),
unknown (mid-light orange, diamond) and known-idle (very light, circle). Bridges and ports
are small white hexagons; a port the capture kernel reset gets a thick black ring.
Series in charts (before/after, the four claims) get lightness steps and hatches.

No matplotlib import here: the styles are plain data, turned into artists by the callers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BAD", "BRIDGE", "CLASSES", "IDLE", "NOT_JUDGED", "RESET_RING", "SERIES", "UNKNOWN", "VERDICT_STYLES",
           "Style", "dma_style", "legend_handles", "luminance", "series_style", "style_bars", "verdict_style"]


@dataclass(frozen=True)
class Style:
    """How one kind of node or series is drawn."""

    label: str
    face: str
    marker: str = "s"
    hatch: str | None = None
    cls: str = "neutral"       # bad, unknown, idle or neutral
    edge: str = "black"

    @property
    def hatch_colour(self) -> str:
        """Light hatching on a dark fill, dark on a light one."""
        return "#ffffff" if self.face.startswith("#") and luminance(self.face) < 100 else "#333333"

    def marker_kwargs(self) -> dict:
        """Keyword arguments for ``Axes.scatter``."""
        kw = {"c": [self.face], "marker": self.marker, "edgecolors": self.edge, "linewidths": 1}
        if self.hatch:
            kw.update(hatch=self.hatch, hatchcolor=self.hatch_colour)
        return kw


def luminance(colour: str) -> float:
    """Grey level 0-255 of a ``#rrggbb`` colour as PIL's "L" conversion computes it (ITU-R 601)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return (r * 299 + g * 587 + b * 114) / 1000


# the three classes; their grey levels are ~60, ~157 and ~235
BAD = Style("known bad", "#a50f15", "s", None, "bad")
UNKNOWN = Style("unknown", "#f08c1e", "D", "..", "unknown")
IDLE = Style("known idle", "#e8eef5", "o", None, "idle")
CLASSES = {"bad": BAD, "unknown": UNKNOWN, "idle": IDLE}

BRIDGE = Style("bridge or port", "#ffffff", "h", None, "neutral", edge="#444444")
NOT_JUDGED = Style("not judged (host bridge, other function)", "#ffffff", "s", None, "neutral", edge="#444444")
RESET_RING = Style("port reset by the capture kernel (ring)", "none", "o", None, "neutral")

# verdict summaries (dumpkit.verdict.EndpointVerdict.summary); shades within a class keep
# its lightness band, so the class survives grey-scale
VERDICT_STYLES = {
    "DMA after crash, hit capture kernel": Style("DMA after crash, hit capture kernel", "#67000d", "s", "xx", "bad"),
    "DMA after crash, hit capture kernel, stopped by reset": Style(
        "DMA after crash, hit capture kernel, stopped by reset", "#67000d", "s", "//", "bad"),
    "DMA after crash": Style("DMA after crash", "#a50f15", "s", None, "bad"),
    "DMA after crash, hit unknown": Style("DMA after crash, hit unknown", "#a50f15", "s", "..", "bad"),
    "DMA after crash, hit unknown, stopped by reset": Style(
        "DMA after crash, hit unknown, stopped by reset", "#a50f15", "s", "//", "bad"),
    "DMA after crash, stopped by reset": Style("DMA after crash, stopped by reset", "#a50f15", "s", "//", "bad"),
    "unknown": Style("unknown", UNKNOWN.face, UNKNOWN.marker, UNKNOWN.hatch, "unknown"),
    "could DMA, no evidence after crash": Style("could DMA, no evidence after crash", "#deebf7", "o", "..", "idle"),
    "could not DMA": Style("could not DMA", IDLE.face, IDLE.marker, None, "idle"),
}

DMA_STYLES = {True: Style("could DMA at crash", BAD.face, BAD.marker, None, "bad"),
              None: Style("unknown", UNKNOWN.face, UNKNOWN.marker, UNKNOWN.hatch, "unknown"),
              False: Style("could not DMA", IDLE.face, IDLE.marker, None, "idle")}

# chart series (before/after, claims): the first four ~50 grey levels apart, each with its hatch
SERIES = [Style("", "#08306b", "o", None), Style("", "#2171b5", "s", "//"), Style("", "#9ecae1", "^", ".."),
          Style("", "#f7fbff", "D", "xx"), Style("", "#f08c1e", "v", "\\\\"), Style("", "#67000d", "P", "++")]


def verdict_style(summary: str) -> Style:
    """The style of an endpoint verdict; an unfamiliar summary is drawn as unknown."""
    return VERDICT_STYLES.get(summary, VERDICT_STYLES["unknown"])


def dma_style(could_dma: bool | None) -> Style:
    """The style of "could DMA at crash time" (True, False or None for unknown)."""
    return DMA_STYLES[could_dma]


def series_style(i: int) -> Style:
    """The i-th chart series' style."""
    return SERIES[i % len(SERIES)]


def legend_handles(styles, ax=None) -> list:
    """Legend entries for ``styles`` (in order, duplicates dropped). With ``ax``: markers
    as drawn in tree pictures, hatch included (empty scatters on ``ax``, gid "legend");
    without: hatched patches for charts."""
    from matplotlib.patches import Patch

    seen, out = set(), []
    for s in styles:
        if s.label in seen:
            continue
        seen.add(s.label)
        if ax is None:
            out.append(Patch(facecolor=s.face, edgecolor="black", hatch=s.hatch, label=s.label))
        elif s is RESET_RING:
            out.append(ax.scatter([], [], s=140, marker="o", facecolors="none", edgecolors="black", linewidths=2.2,
                                  label=s.label, gid="legend"))
        else:
            out.append(ax.scatter([], [], s=140, label=s.label, gid="legend", **s.marker_kwargs()))
    return out


def style_bars(ax) -> None:
    """Restyle a bar chart's series (``ax.containers``, as pandas draws them) with the
    series palette: lightness steps and hatches, so they stay apart in grey-scale."""
    for i, container in enumerate(ax.containers):
        style = series_style(i)
        for bar in container:
            bar.set_facecolor(style.face)
            bar.set_edgecolor("black")
            bar.set_hatch(style.hatch)
    if ax.get_legend() is not None:
        handles = ax.get_legend().legend_handles
        for i, handle in enumerate(handles):
            style = series_style(i)
            handle.set_facecolor(style.face)
            handle.set_edgecolor("black")
            handle.set_hatch(style.hatch)
