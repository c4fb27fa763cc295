"""Render a collected PCI tree: tree text, pandas DataFrame, JSON, matplotlib picture."""

from __future__ import annotations

import dataclasses
import json

from dumpkit.pci.collect import PciDevice, PciTree

__all__ = ["DMA_COLOURS", "device_label", "plot_tree", "to_frame", "to_json", "to_records", "tree_text"]

DMA_COLOURS = {True: "#d62728", False: "#2ca02c", None: "#ff9f1a"}
DMA_LEGEND = {True: "could DMA at crash", False: "could not DMA", None: "unknown"}


def device_label(dev: PciDevice, width: int = 48) -> str:
    """Short human name: device name, else class name, else the ids."""
    name = dev.device_name or dev.class_name or f"{dev.vendor:04x}:{dev.device:04x}"
    if dev.vendor_name and dev.device_name:
        vendor = dev.vendor_name.split(",")[0]
        for suffix in (" Corporation", " Corp.", " Inc.", " Incorporated", " Ltd."):
            vendor = vendor.removesuffix(suffix)
        name = f"{vendor} {dev.device_name}"
    return name if len(name) <= width else name[:width - 1] + "…"


def _flags(dev: PciDevice) -> str:
    flags = []
    if dev.could_dma:
        flags.append("DMA")
    if dev.is_busmaster:
        flags.append("BM")
    if dev.upstream_busmaster is False:
        flags.append("BM-off-above")
    if dev.power_state not in (None, "D0", "unknown"):
        flags.append(dev.power_state)
    if dev.error_state not in (None, "normal"):
        flags.append(f"ERR:{dev.error_state}")
    if dev.block_cfg_access:
        flags.append("IN-RESET")
    if dev.is_vga:
        flags.append("VGA")
    return " ".join(flags)


def tree_text(tree: PciTree) -> str:
    """lspci -tv-like text: one line per function, children indented under bridges,
    with DMA-relevant flags (DMA = could DMA at crash, BM = Bus Master, IN-RESET =
    config access blocked by a reset in progress)."""
    lines: list[str] = []

    def walk(dev: PciDevice, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        extra = f"  [{dev.driver}]" if dev.driver else ""
        port = f" {dev.pcie_port_type}" if dev.pcie_port_type and dev.is_bridge else ""
        flags = _flags(dev)
        lines.append(f"{prefix}{branch}{dev.bdf}{port}  {device_label(dev)}{extra}"
                     + (f"  <{flags}>" if flags else ""))
        kids = tree.children(dev.bdf)
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, False)

    for dev in tree.children(None):
        walk(dev, "", True, True)
    lines += [f"!! {err}" for err in tree.errors]
    return "\n".join(lines)


def to_records(tree: PciTree) -> list[dict]:
    """One plain dict per function (``unknown`` kept as a dict)."""
    return [dataclasses.asdict(d) for d in tree]


def to_frame(tree: PciTree):
    """A pandas DataFrame, one row per function, indexed by bdf; ``unknown`` becomes a
    "field: reason; ..." string column."""
    import pandas as pd

    rows = []
    for rec in to_records(tree):
        rec["unknown"] = "; ".join(f"{k}: {v}" for k, v in rec["unknown"].items())
        rec["reset_methods"] = None if rec["reset_methods"] is None else ",".join(rec["reset_methods"])
        rows.append(rec)
    frame = pd.DataFrame(rows).set_index("bdf")
    for col in ("subsystem_vendor", "subsystem_device", "class_code", "revision", "header_type",
                "secondary_bus", "subordinate_bus", "enable_count", "saved_command", "iommu_group"):
        frame[col] = frame[col].astype("Int64")
    return frame


def to_json(tree: PciTree, **extra) -> str:
    """JSON text: ``{"devices": [...], "pci_ids": path, **extra}``."""
    return json.dumps({"devices": to_records(tree), "pci_ids": tree.pci_ids, "errors": tree.errors, **extra},
                      indent=1, default=str)


def plot_tree(tree: PciTree, ax=None, title: str | None = None):
    """Draw the tree: one row per function, bridges as outlined boxes, endpoints filled
    by whether they could DMA at crash time.

    :param ax: a matplotlib Axes to draw into; a new figure is made if None
    :return: the Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    order: list[tuple[PciDevice, int]] = []

    def walk(dev: PciDevice, depth: int) -> None:
        order.append((dev, depth))
        for kid in tree.children(dev.bdf):
            walk(kid, depth + 1)

    for dev in tree.children(None):
        walk(dev, 0)
    rows = len(order)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(11, 0.42 * rows + 1.2))
    y_of = {}
    for i, (dev, depth) in enumerate(order):
        y = rows - i
        y_of[dev.bdf] = (depth, y)
        if dev.parent in y_of:
            pd_, py = y_of[dev.parent]
            ax.plot([pd_ + 0.15, pd_ + 0.15, depth], [py - 0.2, y, y], color="#888888", lw=1, zorder=1)
        endpoint = not dev.is_bridge
        face = DMA_COLOURS[dev.could_dma] if endpoint else "white"
        ax.scatter([depth], [y], s=140, marker="s" if endpoint else "o", c=[face],
                   edgecolors="black", linewidths=1, zorder=3)
        label = f"{dev.bdf[5:]}  {device_label(dev, 40)}"
        if dev.driver:
            label += f"  [{dev.driver}]"
        if dev.is_bridge and dev.pcie_port_type:
            label += f"  ({dev.pcie_port_type.replace('_', ' ')})"
        ax.text(depth + 0.3, y, label, va="center", fontsize=9,
                fontweight="bold" if dev.could_dma else "normal")
    max_depth = max((d for _, d in order), default=0)
    ax.set_xlim(-0.5, max_depth + 7.5)
    ax.set_ylim(0.3, rows + 0.7)
    ax.axis("off")
    handles = [Patch(facecolor=DMA_COLOURS[k], edgecolor="black", label=v) for k, v in DMA_LEGEND.items()]
    handles.append(Patch(facecolor="white", edgecolor="black", label="bridge / port (circle)"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=True)
    if title:
        ax.set_title(title, loc="left", fontsize=11)
    return ax
