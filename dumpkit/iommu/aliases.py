"""DMA requester ids as the kernel's ``pci_for_each_dma_alias()`` (drivers/pci/search.c)
derives them: a function's own id, the devfns of its ``dma_alias_mask`` (alias quirks,
phantom functions), and the ids bridges put on its transactions on the way up
(a PCIe-to-PCI/PCI-X bridge uses its subordinate bus with devfn 0, a conventional PCI
bridge its own id, a PCI-X-to-PCIe bridge its own id). A fault or a table entry under
such an id belongs to every function that can send it."""

from __future__ import annotations

from dataclasses import dataclass

import drgn

from dumpkit.kernel import device_name, has_member
from dumpkit.target.walk import pci_devices

__all__ = ["DmaAlias", "dma_aliases", "devices_for_requester"]

# include/linux/pci.h enum pci_dev_flags (values since 3.17 / 4.0)
PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS = 1 << 5
PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT = 1 << 9
PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM = 4, 5, 6
PCI_EXP_TYPE_PCI_BRIDGE, PCI_EXP_TYPE_PCIE_BRIDGE = 7, 8
MAX_DEPTH = 64


@dataclass(frozen=True)
class DmaAlias:
    """``device`` may issue DMA with requester id ``requester``; ``via`` says why."""

    requester: str
    device: str
    via: str


def _flag(prog: drgn.Program, name: str, default: int) -> int:
    try:
        return prog.constant(name).value_()
    except (LookupError, ValueError):
        return default


def _bdf(segment: int, bus: int, devfn: int) -> str:
    return f"{segment:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


def _aliases_of(prog: drgn.Program, name: str, pdev: drgn.Object, flags: tuple[int, int]) -> list[DmaAlias]:
    alias_flag, xlate_root = flags
    bus = pdev.bus
    segment = name and int(name[:4], 16)
    out = [DmaAlias(name, name, "its own requester id")]
    # one dma_alias_devfn until v4.6 made it a bitmap of 256 devfns (dma_alias_mask)
    if has_member(prog, "struct pci_dev", "dma_alias_mask") and pdev.dma_alias_mask:
        mask = prog.read(pdev.dma_alias_mask.value_(), 256 // 8)
        for devfn in range(256):
            if mask[devfn // 8] >> (devfn % 8) & 1:
                out.append(DmaAlias(_bdf(segment, bus.number.value_(), devfn), name,
                                    "dma_alias_mask (a quirk: the device uses another devfn)"))
    depth = 0
    while bus.parent:                 # not the root bus
        depth += 1
        if depth > MAX_DEPTH:
            raise LookupError(f"{name}: the PCI bus hierarchy above it loops")
        bridge = bus.self
        bus = bus.parent
        if not bridge:
            continue                  # a virtual bus
        bname = device_name(bridge.dev)
        if bridge.dev_flags.value_() & xlate_root:
            break
        if bridge.pcie_cap.value_():
            ptype = (bridge.pcie_flags_reg.value_() & 0xF0) >> 4
            if ptype in (PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM, PCI_EXP_TYPE_DOWNSTREAM):
                continue
            if ptype == PCI_EXP_TYPE_PCI_BRIDGE:
                out.append(DmaAlias(_bdf(segment, bridge.subordinate.number.value_(), 0), name,
                                    f"PCIe-to-PCI bridge {bname} takes ownership (its secondary bus, devfn 0)"))
            elif ptype == PCI_EXP_TYPE_PCIE_BRIDGE:
                out.append(DmaAlias(bname, name, f"PCI-to-PCIe bridge {bname} forwards it with its own id"))
        elif bridge.dev_flags.value_() & alias_flag:
            out.append(DmaAlias(_bdf(segment, bridge.subordinate.number.value_(), 0), name,
                                f"bridge {bname} (PCIe bridge alias quirk: its secondary bus, devfn 0)"))
        else:
            out.append(DmaAlias(bname, name, f"conventional PCI bridge {bname} forwards it with its own id"))
    return out


def dma_aliases(prog: drgn.Program) -> tuple[list[DmaAlias], list[str]]:
    """Every (requester id, function) pair of the dump, computed once per program.

    :return: (aliases, errors of functions whose aliases could not be read)
    """
    cached = prog.cache.get("dumpkit.dma_aliases")
    if cached is None:
        flags = (_flag(prog, "PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS", PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS),
                 _flag(prog, "PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT", PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT))
        out, errors = [], []
        devices, walk_error = pci_devices(prog)
        if walk_error:
            errors.append(walk_error)
        for name, pdev in devices:
            try:
                out.extend(_aliases_of(prog, name, pdev, flags))
            except (drgn.FaultError, LookupError, ValueError) as e:
                errors.append(f"{name}: DMA aliases unreadable: {e}")
        cached = prog.cache["dumpkit.dma_aliases"] = (out, errors)
    return cached


def devices_for_requester(prog: drgn.Program, requester: str) -> list[DmaAlias]:
    """The functions that can issue DMA with this requester id (``SSSS:BB:DD.F``), itself
    first when it is one."""
    aliases, _errors = dma_aliases(prog)
    found = [a for a in aliases if a.requester == requester]
    return sorted(found, key=lambda a: (a.device != requester, a.device))
