"""Intel VT-d log lines: DMA- and interrupt-remapping faults in every format generation
(the one-line form of 5.14+, the two-line form with "[fault reason NN]" before it, the old
"INTR-REMAP:" form), fault-status lines, the DMAR_DEBUG table dump attached to its fault,
rate-limit notices of the fault handler, and the table-copy messages of a kdump kernel.

A fault line damaged by a bad byte (U+FFFD after decoding with ``errors="replace"``, or a
stray character, a control byte or a NUL where the format has none) still gives its
fault: with the requester recovered when the bad byte was inserted into it, else with
``requester`` None and the damaged text in ``detail["requester_unparsed"]``.
"""

from __future__ import annotations

import re

from dumpkit.iommu.logbase import HEXNUM, Emit, FaultRecord, LogDialect, bdf, copy_messages, table_copy_record
from dumpkit.iommu.vtd.reasons import vtd_fault_reason

__all__ = ["VtdLog", "FSTS_BITS", "TABLE_DUMP_MAX"]

#: Table-dump lines kept per fault (the kernel prints one per table level, about ten).
TABLE_DUMP_MAX = 64
FSTS_BITS = {0: "PFO", 1: "PPF", 2: "AFO", 3: "APF", 4: "IQE", 5: "ICE", 6: "ITE", 7: "PRO"}

_FAULT = re.compile(
    r"DMAR: ?\[(?P<type>DMA Read|DMA Write|INTR-REMAP)(?: (?:NO_PASID|PASID (?P<pasid_a>" + HEXNUM + r")))?\] ?"
    r"Request device \[++(?:(?P<seg>[0-9a-fA-F]{4}):)?(?:0x)?(?P<bus>[0-9a-fA-F]{1,2}):(?:0x)?(?P<dev>[0-9a-fA-F]{1,2})"
    r"\.(?P<fn>[0-7])\]"
    r"(?: PASID (?P<pasid_b>[0-9a-fA-F]++))?"
    r" fault (?P<what>addr|index) (?P<addr>" + HEXNUM + r")"
    r"(?: ?\[fault reason (?P<reason>" + HEXNUM + r")\] ?(?P<text>.*))?\s*+$")
# a fault line with undecodable bytes where the strict pattern wants hex digits: each
# field up to its delimiter, judged one by one
# the requester in brackets, either of which may be the bad byte
_DAMAGED_FIELDS = (
    r"(?:\[++|[^ \[](?=[0-9a-fA-F]))(?P<req>[^\]\[ ]{1,32}?)(?:\]|\S(?= ))"
    r"(?: PASID (?P<pasid>[^ \]\[]{1,12}))?")
_DAMAGED = re.compile(
    r"Request device " + _DAMAGED_FIELDS +
    r"(?: fault (?P<what>addr|index) (?P<addr>[^ \]\[]{1,40}))?"
    r"(?: ?\[fault reason (?P<reason>[^\]\[]{1,12})\])?")
# the same line with the bad byte in "Request device" itself: the bracketed requester
# right before " fault addr"/" fault index" is what is left to find it by
_BARE = re.compile(
    _DAMAGED_FIELDS +
    r" fault (?P<what>addr|index) (?P<addr>[^ \]\[]{1,40})"
    r"(?: ?\[fault reason (?P<reason>[^\]\[]{1,12})\])?")
# the "[DMA Read NO_PASID] " just before "Request device", a damaged byte or two allowed
# after it (a damaged "Request device" between them in a bare match)
_DAMAGED_TYPE = re.compile(r"\[(?P<type>[^\]\[]{1,48})\][^\]\[]{0,3}$")
_BARE_TYPE = re.compile(r"\[(?P<type>[^\]\[]{1,48})\][^\]\[]{0,24}$")
_TYPE = re.compile(r"(?P<type>DMA Read|DMA Write|INTR-REMAP)(?: (?:NO_PASID|PASID (?P<pasid>" + HEXNUM + r")))?")
_REQUESTER = re.compile(r"(?:(?P<seg>[0-9a-fA-F]{4}):)?(?:0x)?(?P<bus>[0-9a-fA-F]{2}):(?:0x)?(?P<dev>[0-9a-fA-F]{2})"
                        r"\.(?P<fn>[0-7])")
_OLD_IR_FAULT = re.compile(
    r"INTR-REMAP: Request device \[++(?:0x)?(?P<bus>[0-9a-fA-F]{1,2}):(?:0x)?(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])\]"
    r" fault index (?P<addr>" + HEXNUM + r")")
_OLD_REASON = re.compile(r"(?P<who>DMAR|INTR-REMAP): ?\[fault reason (?P<reason>\d++)\] ?(?P<text>.*)")
_FSTS = re.compile(r"DRHD: handling fault status reg (?P<reg>[0-9a-fA-F]++)")
_SUPPRESSED = re.compile(r"(?<!\w)(?P<fn>\w++): (?P<n>\d++) callbacks suppressed")
_DUMP_START = re.compile(r"DMAR: Dump (?P<unit>dmar\d+) table entries for IOVA 0x(?P<iova>[0-9a-fA-F]+)")
_DUMP_LINE = re.compile(r"DMAR: ((?:scalable mode )?root entry|context entry|pasid dir entry|pasid table entry"
                        r"|pte level|PTE not present|page table not present)")
_HEXNUM_RX = re.compile(HEXNUM)
_TABLE_COPY = copy_messages([
    (re.compile(r"DMAR: Translation already enabled - trying to copy translation structures"), "intel-vtd",
     "attempt"),
    (re.compile(r"DMAR: Copied translation tables from previous kernel for (?P<unit>\S+)"), "intel-vtd", "copied"),
    (re.compile(r"DMAR: Failed to copy translation tables from previous kernel for (?P<unit>\S+)"), "intel-vtd",
     "failed"),
    (re.compile(r"DMAR: (?P<unit>dmar\d+): Failed to copy context table for bus (?P<bus>\d+)"), "intel-vtd",
     "failed-bus"),
    (re.compile(r"DMAR: Translation was enabled for (?P<unit>\S+) but we are not in kdump mode"), "intel-vtd",
     "not-kdump"),
    (re.compile(r"DMAR-IR: Copied IR table for (?P<unit>\S+) from previous kernel"), "intel-vtd-ir", "copied"),
    (re.compile(r"DMAR-IR: Failed to copy IR table for (?P<unit>\S+) from previous kernel"), "intel-vtd-ir",
     "failed"),
    (re.compile(r"IRQ remapping was enabled on (?P<unit>\S+) but we are not in kdump mode"), "intel-vtd-ir",
     "not-kdump"),
])


def _reason(code_text: str) -> tuple[int, str]:
    # 0x-prefixed from 5.14 on; two decimal digits before
    code = int(code_text, 16) if code_text.lower().startswith("0x") else int(code_text, 10)
    return code, vtd_fault_reason(code)[1]


def _pasid(text: str) -> int | None:
    pasid = int(text, 16)
    return None if pasid in (0xFFFFFFFF, 0xFFFFF) else pasid     # "PASID ffffffff": none (5.5-5.13)


def _fault(m: re.Match) -> FaultRecord:
    ir = m.group("type") == "INTR-REMAP" or m.group("what") == "index"
    pasid_s = m.group("pasid_a") or m.group("pasid_b")
    rec = FaultRecord(kind="intr-remap" if ir else "dma-remap", iommu="intel-vtd", raw="",
                      requester=bdf(m.group("bus"), m.group("dev"), m.group("fn"), m.group("seg")),
                      pasid=None if pasid_s is None else _pasid(pasid_s))
    value = int(m.group("addr"), 16)
    if ir:
        rec.detail["irte_index"] = value
    else:
        rec.address = value
        rec.access = "read" if m.group("type") == "DMA Read" else "write"
    reason = m.group("reason")
    if reason is not None:
        if reason.lower().startswith("0x") or reason.isdigit():
            rec.reason_code, rec.reason = _reason(reason)
        else:                   # a bad byte turned "0x06" into other hex digits
            rec.detail["reason_unparsed"] = reason
    return rec


_NOT_IN_REQUESTER = re.compile(r"[^0-9a-fA-F:.x]")


def _recover_requester(raw: str) -> str | None:
    """A damaged requester: the kernel prints it fixed-width ("%02x:%02x.%d", with "%04x:"
    for a segment), so if dropping the characters that cannot be in it leaves exactly that
    form the bad bytes were inserted and the id is intact; a bad byte in place of a digit
    leaves it short, and then the id is unknown (None)."""
    m = _REQUESTER.fullmatch(_NOT_IN_REQUESTER.sub("", raw))
    return bdf(m.group("bus"), m.group("dev"), m.group("fn"), m.group("seg")) if m else None


def _damaged(m: re.Match, text: str, type_before: re.Pattern = _DAMAGED_TYPE) -> FaultRecord:
    """A fault line with undecodable bytes that the strict pattern rejects: every field that
    still reads cleanly is kept, the others are None with their text in ``detail``
    (``requester_unparsed``, ``address_unparsed``, ``reason_unparsed``); ``detail["damaged"]``
    marks the record."""
    q = m.start()
    before = type_before.search(text, max(0, q - 76), q)
    kind_text = before.group("type") if before else ""
    t = _TYPE.fullmatch(kind_text)
    ir = (t.group("type") == "INTR-REMAP") if t else ("INTR" in kind_text or m.group("what") == "index")
    rec = FaultRecord(kind="intr-remap" if ir else "dma-remap", iommu="intel-vtd", raw="", detail={"damaged": True})
    req = m.group("req")
    rec.requester = _recover_requester(req)
    if rec.requester is None:
        rec.detail["requester_unparsed"] = req
    elif _NOT_IN_REQUESTER.search(req):
        rec.detail["requester_recovered_from"] = req
    pasid_s = (t.group("pasid") if t else None) or m.group("pasid")
    if pasid_s is not None and _HEXNUM_RX.fullmatch(pasid_s):
        rec.pasid = _pasid(pasid_s)
    if t and not ir:
        rec.access = "read" if t.group("type") == "DMA Read" else "write"
    elif not ir and ("Read" in kind_text or "Write" in kind_text):
        rec.access = "read" if "Read" in kind_text else "write"
    addr = m.group("addr")
    if addr is not None:
        if not _HEXNUM_RX.fullmatch(addr):
            rec.detail["address_unparsed"] = addr
        elif ir:
            rec.detail["irte_index"] = int(addr, 16)
        else:
            rec.address = int(addr, 16)
    reason = m.group("reason")
    if reason is not None:
        if _HEXNUM_RX.fullmatch(reason) and (reason.lower().startswith("0x") or reason.isdigit()):
            rec.reason_code, rec.reason = _reason(reason)
        else:
            rec.detail["reason_unparsed"] = reason
    return rec


class VtdLog(LogDialect):
    """VT-d lines of one log."""

    keywords = ("DMAR",                   # faults, dumps, table copies ("DMAR:", "DMAR-IR:")
                "Request device [",       # faults, also old "INTR-REMAP:" ones and damaged tags
                "fault",                  # "[fault reason", "DRHD: handling fault status"
                "callbacks suppressed",
                "IRQ remapping")

    def __init__(self) -> None:
        self.pending_reason: FaultRecord | None = None   # a fault whose "[fault reason]" line follows
        self.dump_target: FaultRecord | None = None      # the fault a DMAR_DEBUG table dump belongs to
        self.dma_by_address: dict[int, FaultRecord] = {}

    def line(self, time: float | None, text: str, emit: Emit) -> bool:
        dmar = "DMAR" in text
        if dmar and self._table_dump(text):
            return True
        self.dump_target = None
        if "Request device [" in text or (" fault addr " in text or " fault index " in text) and (
                dmar or "DMA " in text or "Request" in text):
            rec = self._fault_line(text, dmar)
            if rec is not None:
                emit(rec)
                if rec.kind == "dma-remap" and rec.address is not None:
                    self.dma_by_address[rec.address] = rec
                return True
        if "[fault reason " in text:
            m = _OLD_REASON.search(text)
            if m and self.pending_reason is not None:
                rec, self.pending_reason = self.pending_reason, None
                rec.reason_code = int(m.group("reason"), 10)
                rec.reason = vtd_fault_reason(rec.reason_code)[1]
                rec.raw += "\n" + text
                return True
        m = _FSTS.search(text) if "DRHD: handling fault status reg " in text else None
        if m:
            reg = int(m.group("reg"), 16)
            emit(FaultRecord(kind="fault-status", iommu="intel-vtd", raw="",
                             detail={"fsts": reg, "bits": [n for b, n in FSTS_BITS.items() if reg & (1 << b)],
                                     "fault_record_index": (reg >> 8) & 0xFF}))
            return True
        m = _SUPPRESSED.search(text) if " callbacks suppressed" in text and "dmar" in text else None
        if m and "dmar" in m.group("fn"):       # dmar_fault's rate limit; others are the PCI core's
            emit(FaultRecord(kind="callbacks-suppressed", iommu="intel-vtd", raw="",
                             detail={"function": m.group("fn"), "suppressed": int(m.group("n"))}))
            return True
        if dmar or "IRQ remapping was enabled on " in text:
            rec = table_copy_record(text, _TABLE_COPY)
            if rec:
                emit(rec)
                return True
        return False

    def _table_dump(self, text: str) -> bool:
        m = _DUMP_LINE.search(text)
        if m and self.dump_target is not None:
            dump = self.dump_target.detail.setdefault("table_dump", [])
            if len(dump) < TABLE_DUMP_MAX:
                dump.append(text[m.start(1):])
                self.dump_target.raw += "\n" + text
            else:
                self.dump_target.detail["table_dump_dropped"] = self.dump_target.detail.get("table_dump_dropped", 0) + 1
            return True
        m = _DUMP_START.search(text) if "DMAR: Dump " in text else None
        if m:
            self.dump_target = self.dma_by_address.get(int(m.group("iova"), 16))
            if self.dump_target is not None:
                self.dump_target.unit = m.group("unit")
                self.dump_target.detail["table_dump"] = []
                self.dump_target.raw += "\n" + text
            return True
        return False

    def _fault_line(self, text: str, dmar: bool) -> FaultRecord | None:
        """A fault in any of its forms; remembers it when its reason comes on the next line."""
        m = _FAULT.search(text) if dmar else None
        if m:
            rec = _fault(m)
            self.pending_reason = rec if rec.reason_code is None else None
            return rec
        m = _OLD_IR_FAULT.search(text) if "INTR-REMAP: " in text else None
        if m:
            rec = FaultRecord(kind="intr-remap", iommu="intel-vtd", raw="",
                              requester=bdf(m.group("bus"), m.group("dev"), m.group("fn")),
                              detail={"irte_index": int(m.group("addr"), 16)})
            self.pending_reason = rec
            return rec
        # the strict patterns failed on a fault line: a bad byte somewhere in it
        m = _DAMAGED.search(text)
        rec = _damaged(m, text) if m else None
        if rec is None:
            m = _BARE.search(text)
            rec = _damaged(m, text, _BARE_TYPE) if m else None
        if rec is not None:
            self.pending_reason = rec if rec.reason_code is None and "reason_unparsed" not in rec.detail else None
            return rec
        return None
