"""The AMD-Vi event log: a ring of 16-byte entries in RAM that the IOMMU writes and the
kernel reads. Its head and tail pointers are MMIO registers, which a dump does not hold,
so every non-empty entry is decoded and matched with the lines the kernel printed.

The kernel clears an entry after printing it (``iommu_print_event``), except
IO_PAGE_FAULT entries, whose report returns before the clear (6.1): a non-empty entry of
another type was never printed; an IO_PAGE_FAULT entry may have been."""

from __future__ import annotations

import struct

import drgn

from dumpkit.iommu.amd.units import AmdUnit, _bdf
from dumpkit.iommu.model import IommuEvent

__all__ = ["EVENT_TYPES", "decode_event", "collect_events", "EVT_BUFFER_SIZE"]

EVT_BUFFER_SIZE = 8192   # 512 entries (amd_iommu_types.h, unchanged 2.6.27-6.12)
EVENT_SIZE = 16
EVENT_TYPES = {
    0x1: "ILLEGAL_DEV_TABLE_ENTRY", 0x2: "IO_PAGE_FAULT", 0x3: "DEV_TAB_HARDWARE_ERROR",
    0x4: "PAGE_TAB_HARDWARE_ERROR", 0x5: "ILLEGAL_COMMAND_ERROR", 0x6: "COMMAND_HARDWARE_ERROR",
    0x7: "IOTLB_INV_TIMEOUT", 0x8: "INVALID_DEVICE_REQUEST", 0x9: "INVALID_PPR_REQUEST",
    0xD: "RMP_FAULT", 0xE: "RMP_HW_ERROR",
}
# IO_PAGE_FAULT flags (AMD IOMMU spec, I/O Page Fault Event)
FAULT_FLAGS = {0x001: "GN", 0x002: "NX", 0x004: "US", 0x008: "I", 0x010: "PR", 0x020: "RW", 0x040: "PE",
               0x080: "RZ", 0x100: "TR"}
# events whose first word carries no requester id
NO_DEVICE = {0x5, 0x6}


def decode_event(raw: bytes, unit: str = "", index: int = 0, segment: int = 0) -> IommuEvent | None:
    """One event-log entry, decoded as the kernel's ``iommu_print_event`` does.

    :return: None for an empty entry
    """
    e0, e1, e2, e3 = struct.unpack("<4I", raw[:EVENT_SIZE])
    etype = (e1 >> 28) & 0xF
    if etype == 0 and not (e0 or e1 or e2 or e3):
        return None
    devid = e0 & 0xFFFF
    tag = (e0 & 0xF0000) | (e1 & 0xFFFF)      # domain id for page faults, PASID otherwise
    flags = (e1 >> 16) & 0xFFF
    address = (e3 << 32) | e2
    kind = EVENT_TYPES.get(etype, f"UNKNOWN({etype:#x})")
    decoded: dict = {"type": etype, "flags": flags}
    if etype == 0x2:
        decoded.update({name: bool(flags & bit) for bit, name in FAULT_FLAGS.items()})
        decoded["access"] = "write" if flags & 0x020 else "read"
    elif etype in (0x1, 0x4, 0x8, 0x9):
        decoded["pasid"] = tag
    return IommuEvent(unit=unit, index=index, kind=kind,
                      requester=None if etype in NO_DEVICE else _bdf(segment, devid),
                      domain_id=tag if etype == 0x2 else None, address=address, flags=decoded,
                      raw=(e0, e1, e2, e3))


def collect_events(prog: drgn.Program, u: AmdUnit) -> list[IommuEvent]:
    """Every non-empty entry of the unit's event log, in buffer order."""
    if not u.evt_buf:
        return []
    raw = prog.read(u.evt_buf, EVT_BUFFER_SIZE)
    out = []
    for i in range(EVT_BUFFER_SIZE // EVENT_SIZE):
        ev = decode_event(raw[i * EVENT_SIZE:(i + 1) * EVENT_SIZE], u.unit.name, i, u.segment)
        if ev is not None:
            ev.printed = None if ev.kind == "IO_PAGE_FAULT" else False
            out.append(ev)
    return out
