"""ARM SMMU log lines: v2 context faults, blocked stream ids and global faults; v3 events,
both the old form (a line "event 0xNN received:" and the raw event words on the lines after
it) and the one-line form of 6.x ("event: F_TRANSLATION client: … sid: … iova: …")."""

from __future__ import annotations

import re

from dumpkit.iommu.logbase import Emit, FaultRecord, LogDialect, unit_from_prefix

__all__ = ["SmmuLog"]

_CONTEXT = re.compile(r"Unhandled context fault: fsr=0x(?P<fsr>[0-9a-fA-F]++), iova=0x(?P<iova>[0-9a-fA-F]++), "
                      r"fsynr=0x(?P<fsynr>[0-9a-fA-F]++), cbfrsynra=0x(?P<sid>[0-9a-fA-F]++), cb=(?P<cb>\d++)")
_BLOCKED = re.compile(r"Blocked unknown Stream ID 0x(?P<sid>[0-9a-fA-F]++)")
_GLOBAL = re.compile(r"Unexpected global fault, this could be serious")
_V3_EVENT = re.compile(r"event 0x(?P<id>[0-9a-fA-F]{2}) received:")
_V3_WORD = re.compile(r"(?:\S++ \S+: )?\s*+0x(?P<w>[0-9a-fA-F]{16})\s*+$")
_V3_NEW = re.compile(r"event: (?P<name>\w++) client: (?P<client>\S++) sid: 0x(?P<sid>[0-9a-fA-F]++) "
                     r"ssid: 0x(?P<ssid>[0-9a-fA-F]++) iova: 0x(?P<iova>[0-9a-fA-F]++)")
_V3_NAMES = {0x01: "F_UUT", 0x02: "C_BAD_STREAMID", 0x03: "F_STE_FETCH", 0x04: "C_BAD_STE",
             0x05: "F_BAD_ATS_TREQ", 0x06: "F_STREAM_DISABLED", 0x07: "F_TRANSL_FORBIDDEN",
             0x08: "C_BAD_SUBSTREAMID", 0x09: "F_CD_FETCH", 0x0A: "C_BAD_CD", 0x0B: "F_WALK_EABT",
             0x10: "F_TRANSLATION", 0x11: "F_ADDR_SIZE", 0x12: "F_ACCESS", 0x13: "F_PERMISSION",
             0x20: "F_TLB_CONFLICT", 0x21: "F_CFG_CONFLICT", 0x24: "E_PAGE_REQUEST"}
_ADDRESS_EVENTS = ("F_TRANSLATION", "F_ADDR_SIZE", "F_ACCESS", "F_PERMISSION")
_V3_WORDS = 4
_CONTEXT_FSYNR_WNR = 0x10           # FSYNR0.WNR: the faulting access was a write
_CLIENT_BDF = re.compile(r"[0-9a-fA-F:.]{12}")


def _v3_words(rec: FaultRecord) -> None:
    """Fields of a v3 event from its raw words (the SMMUv3 spec's event record layout)."""
    words = rec.detail.get("words", [])
    if words:
        rec.detail["sid"] = words[0] >> 32
        if words[0] & (1 << 11):
            rec.pasid = (words[0] >> 12) & 0xFFFFF
    if len(words) > 1 and rec.reason in _ADDRESS_EVENTS:
        rec.access = "read" if words[1] & (1 << 35) else "write"
    if len(words) > 2 and rec.reason in _ADDRESS_EVENTS + ("F_TLB_CONFLICT", "F_WALK_EABT"):
        rec.address = words[2]


class SmmuLog(LogDialect):
    """SMMU lines of one log."""

    keywords = ("fault", "Stream ID", "event")
    follow = ("event", "event 0x", _V3_WORDS)        # a v3 event's raw words follow on the next lines

    def __init__(self) -> None:
        self.event: FaultRecord | None = None        # a v3 event still taking raw words

    def line(self, time: float | None, text: str, emit: Emit) -> bool:
        if self.event is not None:
            w = _V3_WORD.match(text) if "0x" in text else None
            if w and len(self.event.detail["words"]) < _V3_WORDS:
                self.event.detail["words"].append(int(w.group("w"), 16))
                self.event.raw += "\n" + text
                _v3_words(self.event)
                return True
            self.event = None
        rec = self._one_line(text)
        if rec is None:
            return False
        emit(rec)
        if rec.detail.get("words") == []:
            self.event = rec
        return True

    @staticmethod
    def _one_line(text: str) -> FaultRecord | None:
        m = _CONTEXT.search(text) if "Unhandled context fault: " in text else None
        if m:
            fsynr = int(m.group("fsynr"), 16)
            return FaultRecord(kind="arm-smmu:context-fault", iommu="arm-smmu", raw="",
                               address=int(m.group("iova"), 16), access="write" if fsynr & _CONTEXT_FSYNR_WNR else "read",
                               unit=unit_from_prefix(text),
                               detail={"fsr": int(m.group("fsr"), 16), "fsynr": fsynr,
                                       "sid": int(m.group("sid"), 16), "cb": int(m.group("cb"))})
        m = _BLOCKED.search(text) if "Blocked unknown Stream ID " in text else None
        if m:
            return FaultRecord(kind="arm-smmu:blocked-stream", iommu="arm-smmu", raw="",
                               unit=unit_from_prefix(text), detail={"sid": int(m.group("sid"), 16)})
        if "Unexpected global fault" in text and _GLOBAL.search(text):
            return FaultRecord(kind="arm-smmu:global-fault", iommu="arm-smmu", raw="", unit=unit_from_prefix(text))
        m = _V3_EVENT.search(text) if "event 0x" in text else None
        if m:
            code = int(m.group("id"), 16)
            return FaultRecord(kind="arm-smmu-v3:event", iommu="arm-smmu-v3", raw="", reason_code=code,
                               reason=_V3_NAMES.get(code, "unknown"), unit=unit_from_prefix(text),
                               detail={"words": []})
        m = _V3_NEW.search(text) if "event: " in text else None
        if m:
            client = m.group("client")
            return FaultRecord(kind="arm-smmu-v3:event", iommu="arm-smmu-v3", raw="", reason=m.group("name"),
                               requester=client.lower() if _CLIENT_BDF.fullmatch(client) else None,
                               address=int(m.group("iova"), 16), unit=unit_from_prefix(text),
                               detail={"sid": int(m.group("sid"), 16), "ssid": int(m.group("ssid"), 16),
                                       "client": client})
        return None
