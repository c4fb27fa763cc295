"""AMD-Vi log lines: the events the kernel prints from the event log ("AMD-Vi: Event
logged [IO_PAGE_FAULT device=… domain=… address=… flags=…]", with the device name in front
from 5.x on) and the device-table copy messages of a kdump kernel."""

from __future__ import annotations

import re

from dumpkit.iommu.logbase import Emit, FaultRecord, LogDialect, copy_messages, pci_name_before, table_copy_record

__all__ = ["AmdLog"]

# the fields of an event are about 100 characters; the device name that dev_err() may put
# in front ("nvme 0000:07:00.1: ") is read separately, see _devname()
_EVENT = re.compile(r"AMD-Vi: Event logged \[(?P<event>[A-Z_]++)(?P<fields>[^\]]{0,256}+)\]")
# keys are short ("device", "address"): a longer run of word characters is never one, and
# bounding it keeps findall linear
_KV = re.compile(r"(\w{1,32})=([0-9a-fA-Fx:.]++)")
_DEVICE = re.compile(r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
_IO_PAGE_FAULT_WRITE = 0x20         # PPR/event flags: RW (amd_iommu_types.h EVENT_FLAG_RW)
_TABLE_COPY = copy_messages([
    (re.compile(r"AMD-Vi: Translation is already enabled - trying to copy translation structures"), "amd-vi",
     "attempt"),
    (re.compile(r"AMD-Vi: Copied DEV table from previous kernel"), "amd-vi", "copied"),
    (re.compile(r"AMD-Vi: Failed to copy DEV table from previous kernel"), "amd-vi", "failed"),
    # since 6.18 (38e5f33ee359 "iommu/amd: Reuse device table for kdump") the capture kernel
    # takes the crashed kernel's device table, command buffer and event log over in place
    (re.compile(r"AMD-Vi: Translation is already enabled - trying to reuse translation structures"), "amd-vi",
     "attempt"),
    (re.compile(r"AMD-Vi: Reused DEV table from previous kernel"), "amd-vi", "reused"),
    (re.compile(r"AMD-Vi: Failed to reuse DEV table from previous kernel"), "amd-vi", "failed"),
    (re.compile(r"AMD-Vi: Translation was enabled for IOMMU:(?P<unit>\d+) but we are not in kdump mode"),
     "amd-vi", "not-kdump"),
])


def _devname(text: str, q: int) -> str | None:
    """The PCI name in "DRIVER 0000:07:00.1: " just before position ``q``, if there."""
    name = pci_name_before(text, q)
    if name and q >= 16 and text[q - 15] == " " and not text[q - 16].isspace():
        return name
    return None


_NOT_IN_DEVICE = re.compile(r"[^0-9a-fA-F:.]")


def _device_field(fields: str) -> str | None:
    """The device= value, up to the next space: a bad byte inserted into it (an undecodable
    byte, a stray character) is dropped when what remains is a well-formed id."""
    if "device=" not in fields:
        return None
    token = fields.split("device=", 1)[1].split(" ", 1)[0]
    clean = _NOT_IN_DEVICE.sub("", token)
    return clean if _DEVICE.fullmatch(clean) else token


def _event(m: re.Match, text: str) -> FaultRecord:
    fields = dict(_KV.findall(m.group("fields")))
    rec = FaultRecord(kind="amd-vi:" + m.group("event").lower(), iommu="amd-vi", raw="", reason=m.group("event"))
    dev = _device_field(m.group("fields")) or _devname(text, m.start())
    if dev:
        if _DEVICE.fullmatch(dev):
            parts = dev.split(":")
            rec.requester = dev.lower() if len(parts) == 3 else f"{int(parts[0], 16):02x}:{parts[1].lower()}"
        else:
            # a bad byte in the id, not just inserted: keep the event, flag the id
            rec.detail.update(damaged=True, requester_unparsed=dev)
    if "address" in fields:
        rec.address = int(fields["address"], 16)
    if "pasid" in fields:
        rec.pasid = int(fields["pasid"], 16)
    if "flags" in fields:
        flags = int(fields["flags"], 16)
        rec.detail["flags"] = flags
        if m.group("event") == "IO_PAGE_FAULT":
            rec.access = "write" if flags & _IO_PAGE_FAULT_WRITE else "read"
    if "domain" in fields:
        rec.detail["domain"] = int(fields["domain"], 16)
    return rec


class AmdLog(LogDialect):
    """AMD-Vi lines of one log."""

    keywords = ("AMD-Vi",)

    def line(self, time: float | None, text: str, emit: Emit) -> bool:
        if "AMD-Vi: " not in text:
            return False
        rec = table_copy_record(text, _TABLE_COPY)
        if rec is None:
            m = _EVENT.search(text) if "AMD-Vi: Event logged [" in text else None
            rec = _event(m, text) if m else None
        if rec is None:
            return False
        emit(rec)
        return True
