"""The shared palette on rendered pictures of real sample dumps: known-bad, unknown and
known-idle endpoints apart in grey-scale (pixels of the PNG converted to grey), ports the
capture kernel reset ringed, trees of 30+ functions readable, chart series apart too."""

from __future__ import annotations

import dataclasses
import io
import itertools
import re

import matplotlib
import pytest
from conftest import SAMPLES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

import dumpkit  # noqa: E402
from dumpkit.palette import RESET_RING, luminance, series_style, style_bars, verdict_style  # noqa: E402
from dumpkit.pci.render import ROW_IN, plot_tree  # noqa: E402
from dumpkit.verdict import judge  # noqa: E402
from dumpkit.verdict.render import plot_verdict_tree  # noqa: E402

MARGIN = 40     # grey levels (0-255) between any two classes


def judged(scenario: str):
    d = dumpkit.open(SAMPLES / scenario / "vmcore.kdump")
    return d.pci(), judge(d, [SAMPLES / scenario / "capture-dmesg.txt"])


@pytest.fixture(scope="module")
def nocopy():
    return judged("nocopy-fault")


@pytest.fixture(scope="module")
def patched():
    return judged("patched-copied")


def grey_png(fig, dpi: int = 100) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return Image.open(io.BytesIO(buf.getvalue())).convert("L")


def node_centres(ax, dpi: int = 100) -> dict[str, tuple[int, int]]:
    """Pixel (x, y from the top) of each function's marker in a PNG saved at ``dpi``."""
    ax.figure.set_dpi(dpi)
    height = ax.figure.get_figheight() * dpi
    out = {}
    for coll in ax.collections:
        gid = coll.get_gid() or ""
        if gid.startswith("node "):
            x, y = ax.transData.transform(coll.get_offsets()[0])
            out[gid[5:]] = (round(x), round(height - y))
    return out


def grey_at(img: Image.Image, xy: tuple[int, int], r: int = 2) -> float:
    """Median grey level of the (2r+1)² pixels around ``xy`` (sparse hatching does not move it)."""
    x, y = xy
    values = sorted(img.getpixel((i, j)) for i in range(x - r, x + r + 1) for j in range(y - r, y + r + 1))
    return values[len(values) // 2]


def test_classes_differ_in_grey_level_on_the_rendered_picture(nocopy):
    tree, v = nocopy
    ax = plot_verdict_tree(tree, v, title="nocopy-fault")
    img, centres = grey_png(ax.figure), node_centres(ax)
    grey: dict[str, list[float]] = {}
    for e in v.endpoints:
        grey.setdefault(verdict_style(e.summary).cls, []).append(grey_at(img, centres[e.bdf]))
    plt.close(ax.figure)
    # the sample holds all three: the NIC that faulted, firmware-owned ICH9 functions, idle virtio
    assert set(grey) == {"bad", "unknown", "idle"}, grey
    for a, b in itertools.combinations(grey, 2):
        gap = min(abs(x - y) for x in grey[a] for y in grey[b])
        assert gap >= MARGIN, (a, b, grey)
    # the fills as drawn agree with the palette's grey levels (PIL's "L" weights)
    assert max(grey["bad"]) < min(grey["unknown"]) and max(grey["unknown"]) < min(grey["idle"])


def test_classes_differ_in_marker_shape_too(nocopy):
    tree, v = nocopy
    ax = plot_verdict_tree(tree, v)
    shapes: dict[str, set] = {}
    by_gid = {c.get_gid(): c for c in ax.collections}
    for e in v.endpoints:
        path = by_gid[f"node {e.bdf}"].get_paths()[0]
        shapes.setdefault(verdict_style(e.summary).cls, set()).add(path.vertices.round(3).tobytes())
    plt.close(ax.figure)
    assert all(len(s) == 1 for s in shapes.values()), "one shape per class"
    assert len({next(iter(s)) for s in shapes.values()}) == 3


def test_unknown_is_never_drawn_as_idle(nocopy):
    """Pictures must not reassure: an endpoint whose DMA is unknown is not in the idle band."""
    tree, v = nocopy
    unknown = [e for e in v.endpoints if e.could_dma.value is None or e.did_dma_after_crash.value is None]
    assert unknown
    assert all(verdict_style(e.summary).cls != "idle" for e in unknown)
    assert all(abs(luminance(verdict_style(e.summary).face) - luminance(verdict_style("could not DMA").face)) >= MARGIN
               for e in unknown)


def test_reset_ports_are_ringed_on_a_patched_sample(patched, nocopy):
    tree, v = patched
    assert v.ports_reset, "the patched capture kernel logs its port resets"
    ax = plot_verdict_tree(tree, v)
    rings = [c for c in ax.collections if c.get_gid() == "reset-ports"]
    assert len(rings) == 1
    by_gid = {c.get_gid(): c for c in ax.collections}
    nodes = {tuple(by_gid[f"node {p}"].get_offsets()[0]) for p in v.ports_reset}
    assert {tuple(xy) for xy in rings[0].get_offsets()} == nodes
    labels = [t.get_text() for t in ax.texts]
    assert sum(label.endswith("[reset]") for label in labels) == len(v.ports_reset)
    assert RESET_RING.label in [t.get_text() for t in ax.get_legend().get_texts()]
    # the ring is drawn: dark pixels on its circle, left of the port's marker
    img, centres = grey_png(ax.figure), node_centres(ax)
    plt.close(ax.figure)
    for port in v.ports_reset:
        x, y = centres[port]
        assert min(img.getpixel((x - dx, y)) for dx in range(8, 15)) < 60, port
    # without resets, no ring
    tree0, v0 = nocopy
    assert not v0.ports_reset
    ax = plot_verdict_tree(tree0, v0)
    assert not [c for c in ax.collections if c.get_gid() == "reset-ports"]
    assert not any(t.get_text().endswith("[reset]") for t in ax.texts)
    plt.close(ax.figure)


def _grown(tree, v, copies: int = 12):
    """The sample tree grown with copies of its real NIC endpoint (verdict included) on the
    root bus: more functions than any sample has."""
    from dumpkit.pci.collect import PciTree

    ep = next(d for d in tree if d.driver == "e1000e")
    verdict = v.get(ep.bdf)
    bdfs = [f"0000:00:{0x10 + i:02x}.0" for i in range(copies)]
    devs = [dataclasses.replace(ep, bdf=b, parent=None) for b in bdfs]
    big = PciTree(sorted(list(tree) + devs, key=lambda d: d.bdf))
    verdicts = dataclasses.replace(v, endpoints=v.endpoints + [dataclasses.replace(verdict, bdf=b) for b in bdfs])
    return big, verdicts


def test_twenty_and_more_functions_stay_readable(patched):
    tree, v = patched
    small = plot_verdict_tree(tree, v)
    big_tree, big_v = _grown(tree, v)
    assert len(big_tree) >= 30
    ax = plot_verdict_tree(big_tree, big_v)
    fig = ax.figure
    # the figure grows with the tree: the same height per row
    grow = (fig.get_figheight() - small.figure.get_figheight()) / (len(big_tree) - len(tree))
    assert grow == pytest.approx(ROW_IN)
    renderer = fig.canvas.get_renderer()
    texts = [t.get_window_extent(renderer) for t in ax.texts]
    overlaps = [(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if texts[i].overlaps(texts[j])]
    assert not overlaps
    figure_box = fig.bbox
    assert all(figure_box.x0 <= b.x0 and b.x1 <= figure_box.x1 and figure_box.y0 <= b.y0 for b in texts)
    legend = ax.get_legend().get_window_extent(renderer)
    nodes = [ax.transData.transform(c.get_offsets()[0]) for c in ax.collections
             if (c.get_gid() or "").startswith("node ")]
    assert not [b for b in texts if legend.overlaps(b)]
    assert not [(x, y) for x, y in nodes if legend.x0 - 8 <= x <= legend.x1 + 8 and legend.y0 - 8 <= y <= legend.y1 + 8]
    # every label is at least 9 pt and rows are at least a line apart
    assert all(t.get_fontsize() >= 9 for t in ax.texts)
    ys = sorted(b.y0 for b in texts)
    assert min(b - a for a, b in zip(ys, ys[1:], strict=False)) >= 9 * fig.dpi / 72
    plt.close(fig)
    plt.close(small.figure)


def test_pci_tree_picture_uses_the_same_palette(nocopy):
    tree, _v = nocopy
    ax = plot_tree(tree)
    img, centres = grey_png(ax.figure), node_centres(ax)
    plt.close(ax.figure)
    grey = {d.bdf: grey_at(img, centres[d.bdf]) for d in tree if d.is_endpoint}
    bad = [g for b, g in grey.items() if tree.get(b).could_dma]
    # no driver: the kernel's "Bus Master off" does not prove firmware left it idle
    unknown = [g for b, g in grey.items() if tree.get(b).could_dma is None or tree.get(b).driver is None]
    idle = [g for b, g in grey.items() if tree.get(b).could_dma is False and tree.get(b).driver]
    assert bad and unknown
    assert max(bad) + MARGIN <= min(unknown)
    if idle:
        assert max(unknown) + MARGIN <= min(idle)


def test_chart_series_stay_apart_in_grey_scale(nocopy):
    """Bar charts of the notebooks (before/after, the four claims) restyled by style_bars."""
    import pandas as pd

    _tree, v = nocopy
    frame = pd.DataFrame({c: [int(bool(getattr(e, c).value)) + 1 for e in v.endpoints]
                          for c in ("could_dma", "did_dma_after_crash", "hit_capture_kernel", "stopped_by_reset")},
                         index=[e.bdf for e in v.endpoints])
    ax = frame.plot.barh(figsize=(8, 6))
    style_bars(ax)
    faces = [luminance(matplotlib.colors.to_hex(c.patches[0].get_facecolor())) for c in ax.containers]
    hatches = [c.patches[0].get_hatch() for c in ax.containers]
    plt.close(ax.figure)
    assert min(abs(a - b) for a, b in itertools.combinations(faces, 2)) >= MARGIN
    assert len(set(hatches)) == len(hatches)
    assert [series_style(i).hatch for i in range(4)] == hatches


def test_timeline_sides_differ_in_marker_and_grey(tmp_path):
    from dumpkit.report import capture_timeline, plot_timeline

    events = capture_timeline([SAMPLES / "nocopy-fault" / "capture-dmesg.txt"], "before") + \
        capture_timeline([SAMPLES / "patched-nocopy" / "capture-dmesg.txt"], "after")
    ax = plot_timeline(events)
    assert ax is not None
    colls = [c for c in ax.collections if re.match(r"before|after", c.get_label() or "")]
    assert len(colls) == 2
    greys = [luminance(matplotlib.colors.to_hex(c.get_facecolor()[0])) for c in colls]
    assert abs(greys[0] - greys[1]) >= MARGIN
    assert colls[0].get_paths()[0].vertices.tobytes() != colls[1].get_paths()[0].vertices.tobytes()
    plt.close(ax.figure)
