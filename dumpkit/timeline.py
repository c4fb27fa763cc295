"""The capture kernel's timeline as a picture that answers "what happened when": the
crash, the moment the capture kernel took the IOMMU over (its DMA-remapping table copy,
copied or failed), each table copy by the table it copied (interrupt remapping, DMA
translation, AMD-Vi device table), faults one lane per device, and port resets apart.

Times are the capture kernel's (s since it booted); the crash happened before it booted,
by a gap its log does not give, so the crash is drawn left of 0 behind a break.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dumpkit.iommu.backends import TABLES, TRANSLATION_TABLES

__all__ = ["TABLES", "TimelineEvent", "iommu_switch", "plot_capture_timeline", "timeline_events", "timeline_table"]

# the table a copy message is about (TABLES, by the record's ``iommu`` field) and the
# DMA-remapping copies, whose outcome is when the capture kernel's IOMMU takes over DMA:
# each IOMMU backend says its own
_TRANSLATION = TRANSLATION_TABLES
_COPY_WORDS = {"attempt": "copy attempted", "copied": "copied", "reused": "reused in place", "failed": "copy failed",
               "failed-bus": "copy failed for a bus", "not-kdump": "enabled but not in kdump mode"}


@dataclass(frozen=True)
class TimelineEvent:
    """One event of a capture log: ``kind`` is copy, fault, suppressed, reset or not-reset;
    ``lane`` the row it is drawn in; ``label`` its words."""

    time: float | None
    kind: str
    lane: str
    label: str
    device: str | None = None
    log: str = ""
    side: str | None = None
    status: str | None = None      # a copy's outcome: attempt, copied, failed...
    table: str | None = None       # a copy's table (see TABLES)


def _read(path) -> str:
    from dumpkit.errors import InputError

    try:
        return Path(path).read_bytes().decode(errors="replace")
    except OSError as e:
        raise InputError(f"capture log {path}: {e.strerror}", "check the path") from None


def timeline_events(logs, side: str | None = None, names: Mapping[str, str] | None = None) -> list[TimelineEvent]:
    """The events of capture-kernel logs, in time order.

    :param names: a device's BDF ("bb:dd.f" or with its segment) -> a short name (its
        driver) shown in its fault lane
    """
    from dumpkit.iommu.faults import parse_log
    from dumpkit.iommu.logbase import strip_prefix
    from dumpkit.verdict import NOT_RESET_LINE, RESET_LINE

    names = {k[-7:]: v for k, v in (names or {}).items()}
    if isinstance(logs, (str, os.PathLike)):
        logs = [logs]
    out: list[TimelineEvent] = []
    for log in logs:
        text, name = _read(log), Path(log).name
        for r in parse_log(text, name):
            if r.kind == "table-copy":
                table = TABLES.get(r.iommu, f"{r.iommu} table")
                word = _COPY_WORDS.get(r.reason or "", r.reason or "")
                out.append(TimelineEvent(r.time, "copy", f"copy: {table}", f"{table}: {word}", None, name, side,
                                         r.reason, table))
            elif r.kind == "callbacks-suppressed":
                out.append(TimelineEvent(r.time, "suppressed", "faults suppressed (rate limit)",
                                         f"{r.detail.get('suppressed', '?')} messages suppressed", None, name, side))
            elif r.requester is not None:
                dev = r.requester[-7:]
                who = f"{dev} {names[dev]}" if dev in names else dev
                out.append(TimelineEvent(r.time, "fault", f"fault: {who}",
                                         f"{r.kind} {r.reason or ''}".strip(), r.requester, name, side))
        for line in text.splitlines():
            t, body = strip_prefix(line)
            m = RESET_LINE.search(body)
            if m:
                out.append(TimelineEvent(t, "reset", "port reset", f"{m.group('port')} reset", m.group("port"),
                                         name, side))
                continue
            m = NOT_RESET_LINE.search(body)
            if m:
                out.append(TimelineEvent(t, "not-reset", "port not reset", f"{m.group('port')}: {m.group('why')}",
                                         m.group("port"), name, side))
    return sorted(out, key=lambda e: (e.time is None, e.time or 0.0))


def iommu_switch(events: Sequence[TimelineEvent]) -> TimelineEvent | None:
    """The moment the capture kernel's IOMMU took DMA over: the outcome (copied or failed)
    of its DMA-translation table copy; None when the log has none."""
    return next((e for e in events if e.kind == "copy" and e.status in ("copied", "reused", "failed", "not-kdump")
                 and e.table in {TABLES[k] for k in _TRANSLATION} and e.time is not None), None)


_LANE_ORDER = ("copy", "fault", "suppressed", "reset", "not-reset")
# marker per kind (and per copy outcome): shape and fill, never colour alone
_MARKS = {("copy", "attempt"): dict(marker="o", facecolors="white", edgecolors="black", s=60),
          ("copy", "copied"): dict(marker="o", facecolors="#2171b5", edgecolors="black", s=70),
          ("copy", "reused"): dict(marker="D", facecolors="#2171b5", edgecolors="black", s=60),
          ("copy", "failed"): dict(marker="X", facecolors="#a50f15", edgecolors="black", s=110),
          ("fault", None): dict(marker="v", facecolors="#67000d", edgecolors="black", s=90),
          ("suppressed", None): dict(marker="v", facecolors="white", edgecolors="#67000d", s=70),
          ("reset", None): dict(marker="s", facecolors="black", edgecolors="black", s=60),
          ("not-reset", None): dict(marker="s", facecolors="white", edgecolors="black", s=60)}
_MARK_WORDS = {("copy", "attempt"): "table copy attempted", ("copy", "copied"): "table copied",
               ("copy", "reused"): "tables reused in place",
               ("copy", "failed"): "table copy failed", ("fault", None): "DMA fault (per device)",
               ("suppressed", None): "fault messages suppressed", ("reset", None): "port reset",
               ("not-reset", None): "port not reset"}


def _mark_key(e: TimelineEvent) -> tuple[str, str | None]:
    if e.kind == "copy":
        return ("copy", e.status if e.status in ("attempt", "copied", "reused") else "failed")
    return (e.kind, None)


def _lanes(events: Sequence[TimelineEvent]) -> list[str]:
    lanes = sorted(dict.fromkeys(e.lane for e in events), key=lambda lane: (
        next(_LANE_ORDER.index(e.kind) for e in events if e.lane == lane), lane))
    return ["crash"] + lanes


def _draw_side(ax, events: Sequence[TimelineEvent], x0: float, span: float, title: str | None) -> None:
    lanes = _lanes(events)
    y = {lane: i for i, lane in enumerate(lanes)}
    crash_x = x0 - 0.12 * span
    ax.scatter([crash_x], [0], marker="*", s=260, c="black", zorder=4)
    top = ax.get_xaxis_transform()      # x in data, y in axes: labels above the panel
    ax.axvline(0, color="#555555", lw=1, ls=":", zorder=1)
    ax.text(0, 1.02, "capture kernel boots", transform=top, fontsize=8, color="#333333", ha="center", va="bottom")
    switch = iommu_switch(events)
    if switch is not None:
        kept = switch.status in ("copied", "reused")
        ax.axvline(switch.time, color="#2171b5" if kept else "#a50f15", lw=2, zorder=1)
        word = {"copied": "tables copied", "reused": "tables reused in place"}.get(switch.status) \
            or switch.label.split(": ", 1)[-1]
        right = switch.time > 0.6 * span
        ax.text(switch.time, 1.02, f"IOMMU switch ({word})", transform=top, fontsize=9, fontweight="bold",
                ha="right" if right else "left", va="bottom")
    drawn = set()
    for e in events:
        if e.time is None:
            continue
        key = _mark_key(e)
        ax.scatter([e.time], [y[e.lane]], zorder=3, linewidths=1, label=None if key in drawn else _MARK_WORDS[key],
                   **_MARKS[key])
        drawn.add(key)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(len(lanes) - 0.4, -0.6)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, loc="left", fontsize=10, pad=16, fontweight="bold")


def plot_capture_timeline(events: Sequence[TimelineEvent], title: str | None = None):
    """The timeline of :func:`timeline_events` (one panel per side when events carry
    several): lanes for the crash, each table's copy, each device's faults and the port
    resets; the IOMMU switch as a vertical line, named.

    :return: the matplotlib figure, or None when no event has a time
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    timed = [e for e in events if e.time is not None]
    if not timed:
        return None
    sides = list(dict.fromkeys(e.side for e in timed))
    per_side = {s: [e for e in timed if e.side == s] for s in sides}
    heights = [len(_lanes(per_side[s])) for s in sides]
    end = max(e.time for e in timed)
    span = max(end, 0.5)
    fig, axes = plt.subplots(len(sides), 1, sharex=True, squeeze=False,
                             figsize=(11, 0.42 * sum(heights) + 1.1 * len(sides) + 0.9),
                             gridspec_kw={"height_ratios": heights})
    for ax, side in zip(axes[:, 0], sides, strict=True):
        _draw_side(ax, per_side[side], 0.0, span, side if len(sides) > 1 else None)
    last = axes[-1, 0]
    last.set_xlim(-0.2 * span, end + 0.08 * span)
    last.set_xlabel("capture kernel time (s since it booted); the crash came before, by a gap the log does not give")
    keys = list(dict.fromkeys(_mark_key(e) for e in timed))
    handles = [Line2D([], [], marker="*", ls="", color="black", markersize=12, label="crash")]
    handles += [Line2D([], [], ls="", marker=_MARKS[k]["marker"], markerfacecolor=_MARKS[k]["facecolors"],
                       markeredgecolor=_MARKS[k]["edgecolors"], markersize=8, label=_MARK_WORDS[k]) for k in keys]
    if any(iommu_switch(per_side[s]) for s in sides):
        handles.append(Line2D([], [], color="black", lw=2, label="IOMMU switch (its translation-table copy)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(handles) > 4), 1, 1))
    return fig


def timeline_table(events: Sequence[TimelineEvent]):
    """The events as a :class:`dumpkit.report_tables.Table` (time, side, lane, what, log)."""
    from dumpkit.report_tables import Table, cell_text

    sided = any(e.side for e in events)
    rows = [([e.side or ""] if sided else []) + [cell_text(e.time), e.lane, e.label, e.log] for e in events]
    return Table((["dump"] if sided else []) + ["time (s)", "lane", "what", "log"], rows,
                 empty="no event in the capture log")
