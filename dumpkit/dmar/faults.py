"""IOMMU fault records from kernel logs, in every format since 2.6.

One parser serves text logs (capture kernel dmesg, vmcore-dmesg.txt, serial console,
syslog/journal exports) and a dump's printk buffer. It understands Intel DMA- and
interrupt-remapping faults (all format generations), fault-status and "callbacks
suppressed" lines, the DMAR_DEBUG table dump (attached to its fault), the table-copy
messages of kdump kernels, AMD-Vi events, ARM SMMU v2/v3 faults, PCI SERR NMIs and AER.
It never raises on text it does not understand: such lines are skipped.

It is linear in its input, whatever the input: only the first :data:`LINE_MAX` characters
of a line are read (a kernel log record is far shorter; a record at the start of an
enormous line is still found), runs of NUL characters (holes of sparse or truncated log
files) end a line, lines are screened by keywords before any pattern runs, and every
pattern is anchored or bounded so that no line costs more than a constant times its
(capped) length. A line damaged by undecodable bytes (U+FFFD after decoding with
``errors="replace"``) still gives its VT-d fault: with the requester recovered when the
bad byte was inserted into it, else with ``requester`` None and the damaged text in
``detail["requester_unparsed"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from dumpkit.dmar.reasons import vtd_fault_reason

__all__ = ["FaultRecord", "parse_log", "parse_lines", "parse_printk", "FSTS_BITS", "LINE_MAX"]

#: Characters of one line that are parsed: a printk record is at most 1 KiB (2 KiB from
#: 6.1 on) plus a syslog/journal prefix; the rest of a longer line is ignored.
LINE_MAX = 8192
#: Table-dump lines kept per fault (the kernel prints one per table level, about ten).
TABLE_DUMP_MAX = 64

FSTS_BITS = {0: "PFO", 1: "PPF", 2: "AFO", 3: "APF", 4: "IQE", 5: "ICE", 6: "ITE", 7: "PRO"}


@dataclass
class FaultRecord:
    """One event. ``requester`` is "bb:dd.f" (Intel and old AMD logs give no segment) or
    "ssss:bb:dd.f"; ``access`` is "read", "write" or None."""

    kind: str
    iommu: str
    raw: str
    time: float | None = None
    source: str | None = None
    unit: str | None = None
    requester: str | None = None
    pasid: int | None = None
    address: int | None = None
    access: str | None = None
    reason_code: int | None = None
    reason: str | None = None
    detail: dict = field(default_factory=dict)

    @property
    def requester_bdf(self) -> str | None:
        """Requester without segment ("bb:dd.f")."""
        return None if self.requester is None else self.requester[-7:]


# --- line prefixes -------------------------------------------------------------------

_PREFIX = re.compile(
    r"^(?:<\d+>)?"                                                     # syslog priority
    r"(?:(?:[A-Z][a-z]{2} +\d+ [\d:]{8}|\d{4}-\d\d-\d\dT[\d:.+\-Z]+) \S+ kernel: )?"  # syslog / journal
    r"(?:\[ *(?P<time>\d+\.\d+)\] )?"                                   # printk timestamp
    r"(?:\[ *[CT]\d+\] )?")                                            # caller id


def _strip(line: str) -> tuple[float | None, str]:
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    t = float(m.group("time")) if m and m.group("time") else None
    return t, line[m.end():] if m else line


def _hex(s: str) -> int:
    return int(s, 16)


def _bdf(bus: str, dev: str, fn: str, seg: str | None = None) -> str:
    core = f"{int(bus, 16):02x}:{int(dev, 16):02x}.{int(fn)}"
    return f"{int(seg, 16):04x}:{core}" if seg else core


# --- Intel VT-d ----------------------------------------------------------------------

# Every pattern below either starts with a literal (the regex engine skips to it) or
# cannot start a match inside a run of the characters its first repeat takes (a
# lookbehind), and has no unbounded repeat that could be scanned again from a later
# start: matching a line costs time linear in its length.
_HEXNUM = r"(?:0x)?[0-9a-fA-F]++"
_VTD_FAULT = re.compile(
    r"DMAR: ?\[(?P<type>DMA Read|DMA Write|INTR-REMAP)(?: (?:NO_PASID|PASID (?P<pasid_a>" + _HEXNUM + r")))?\] ?"
    r"Request device \[++(?:(?P<seg>[0-9a-fA-F]{4}):)?(?:0x)?(?P<bus>[0-9a-fA-F]{1,2}):(?:0x)?(?P<dev>[0-9a-fA-F]{1,2})"
    r"\.(?P<fn>[0-7])\]"
    r"(?: PASID (?P<pasid_b>[0-9a-fA-F]++))?"
    r" fault (?P<what>addr|index) (?P<addr>" + _HEXNUM + r")"
    r"(?: ?\[fault reason (?P<reason>" + _HEXNUM + r")\] ?(?P<text>.*))?\s*+$")
# a fault line with undecodable bytes (U+FFFD) where the strict pattern wants hex digits:
# each field up to its delimiter, judged one by one
_VTD_DAMAGED = re.compile(
    r"Request device \[++(?P<req>[^\]\[ ]{1,32})\]"
    r"(?: PASID (?P<pasid>[^ \]\[]{1,12}))?"
    r"(?: fault (?P<what>addr|index) (?P<addr>[^ \]\[]{1,40}))?"
    r"(?: ?\[fault reason (?P<reason>[^\]\[]{1,12})\])?")
# the "[DMA Read NO_PASID] " just before "Request device", a damaged byte or two allowed after it
_VTD_DAMAGED_TYPE = re.compile(r"\[(?P<type>[^\]\[]{1,48})\][^\]\[]{0,3}$")
_VTD_TYPE = re.compile(r"(?P<type>DMA Read|DMA Write|INTR-REMAP)(?: (?:NO_PASID|PASID (?P<pasid>" + _HEXNUM + r")))?")
_REQUESTER = re.compile(r"(?:(?P<seg>[0-9a-fA-F]{4}):)?(?:0x)?(?P<bus>[0-9a-fA-F]{2}):(?:0x)?(?P<dev>[0-9a-fA-F]{2})"
                        r"\.(?P<fn>[0-7])")
_OLD_IR_FAULT = re.compile(
    r"INTR-REMAP: Request device \[++(?:0x)?(?P<bus>[0-9a-fA-F]{1,2}):(?:0x)?(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])\]"
    r" fault index (?P<addr>" + _HEXNUM + r")")
_OLD_REASON = re.compile(r"(?P<who>DMAR|INTR-REMAP): ?\[fault reason (?P<reason>\d++)\] ?(?P<text>.*)")
_FSTS = re.compile(r"DRHD: handling fault status reg (?P<reg>[0-9a-fA-F]++)")
_SUPPRESSED = re.compile(r"(?<!\w)(?P<fn>\w++): (?P<n>\d++) callbacks suppressed")
_DUMP_START = re.compile(r"DMAR: Dump (?P<unit>dmar\d+) table entries for IOVA 0x(?P<iova>[0-9a-fA-F]+)")
_DUMP_LINE = re.compile(r"DMAR: ((?:scalable mode )?root entry|context entry|pasid dir entry|pasid table entry"
                        r"|pte level|PTE not present|page table not present)")
_TABLE_COPY = [
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
    (re.compile(r"AMD-Vi: Translation is already enabled - trying to copy translation structures"), "amd-vi",
     "attempt"),
    (re.compile(r"AMD-Vi: Copied DEV table from previous kernel"), "amd-vi", "copied"),
    (re.compile(r"AMD-Vi: Failed to copy DEV table from previous kernel"), "amd-vi", "failed"),
    (re.compile(r"AMD-Vi: Translation was enabled for IOMMU:(?P<unit>\d+) but we are not in kdump mode"),
     "amd-vi", "not-kdump"),
]


def _vtd_fault(m: re.Match) -> FaultRecord | None:
    ir = m.group("type") == "INTR-REMAP" or m.group("what") == "index"
    pasid_s = m.group("pasid_a") or m.group("pasid_b")
    pasid = None
    if pasid_s is not None:
        pasid = int(pasid_s, 16)
        if pasid in (0xFFFFFFFF, 0xFFFFF):   # "PASID ffffffff": none (5.5-5.13)
            pasid = None
    rec = FaultRecord(kind="intr-remap" if ir else "dma-remap", iommu="intel-vtd", raw="",
                      requester=_bdf(m.group("bus"), m.group("dev"), m.group("fn"), m.group("seg")), pasid=pasid)
    value = _hex(m.group("addr"))
    if ir:
        rec.detail["irte_index"] = value
    else:
        rec.address = value
        rec.access = "read" if m.group("type") == "DMA Read" else "write"
    reason = m.group("reason")
    if reason is not None:
        # 0x-prefixed from 5.14 on; two decimal digits before
        rec.reason_code = int(reason, 16) if reason.lower().startswith("0x") else int(reason, 10)
        rec.reason = vtd_fault_reason(rec.reason_code)[1]
    return rec


def _recover_requester(raw: str) -> str | None:
    """A requester whose text holds U+FFFD: the kernel prints it fixed-width ("%02x:%02x.%d",
    with "%04x:" for a segment), so if dropping the replacement characters leaves exactly
    that form the bad bytes were inserted and the id is intact; a bad byte in place of a
    digit leaves it short, and then the id is unknown (None)."""
    m = _REQUESTER.fullmatch(raw.replace("\ufffd", ""))
    return _bdf(m.group("bus"), m.group("dev"), m.group("fn"), m.group("seg")) if m else None


def _vtd_damaged(m: re.Match, text: str) -> FaultRecord:
    """A VT-d fault line with undecodable bytes that the strict pattern rejects: every field
    that still reads cleanly is kept, the others are None with their text in ``detail``
    (``requester_unparsed``, ``address_unparsed``, ``reason_unparsed``); ``detail["damaged"]``
    marks the record."""
    q = m.start()
    before = _VTD_DAMAGED_TYPE.search(text, max(0, q - 54), q)
    kind_text = before.group("type") if before else ""
    t = _VTD_TYPE.fullmatch(kind_text)
    what = m.group("what")
    ir = (t.group("type") == "INTR-REMAP") if t else ("INTR" in kind_text or what == "index")
    rec = FaultRecord(kind="intr-remap" if ir else "dma-remap", iommu="intel-vtd", raw="", detail={"damaged": True})
    req = m.group("req")
    rec.requester = _recover_requester(req)
    if rec.requester is None:
        rec.detail["requester_unparsed"] = req
    elif "\ufffd" in req:
        rec.detail["requester_recovered_from"] = req
    pasid_s = (t.group("pasid") if t else None) or m.group("pasid")
    if pasid_s is not None and _HEXNUM_RX.fullmatch(pasid_s):
        pasid = int(pasid_s, 16)
        rec.pasid = None if pasid in (0xFFFFFFFF, 0xFFFFF) else pasid
    if t and not ir:
        rec.access = "read" if t.group("type") == "DMA Read" else "write"
    elif not ir and ("Read" in kind_text or "Write" in kind_text):
        rec.access = "read" if "Read" in kind_text else "write"
    addr = m.group("addr")
    if addr is not None:
        if _HEXNUM_RX.fullmatch(addr):
            rec.detail["irte_index" if ir else "address"] = _hex(addr)
            if not ir:
                rec.address = rec.detail.pop("address")
        else:
            rec.detail["address_unparsed"] = addr
    reason = m.group("reason")
    if reason is not None:
        if _HEXNUM_RX.fullmatch(reason) and (reason.lower().startswith("0x") or reason.isdigit()):
            rec.reason_code = int(reason, 16) if reason.lower().startswith("0x") else int(reason, 10)
            rec.reason = vtd_fault_reason(rec.reason_code)[1]
        else:
            rec.detail["reason_unparsed"] = reason
    return rec


# --- AMD-Vi, ARM SMMU, PCI -----------------------------------------------------------

# the fields of an event are about 100 characters; the device name that dev_err() may put
# in front ("nvme 0000:07:00.1: ") is read separately, see _amd_devname()
_AMD_EVENT = re.compile(r"AMD-Vi: Event logged \[(?P<event>[A-Z_]++)(?P<fields>[^\]]{0,256}+)\]")
# keys are short ("device", "address"): a longer run of word characters is never one, and
# bounding it keeps findall linear
_KV = re.compile(r"(\w{1,32})=([0-9a-fA-Fx:.]++)")
_AMD_DEVICE = re.compile(r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
_SMMU_CTX = re.compile(r"Unhandled context fault: fsr=0x(?P<fsr>[0-9a-fA-F]++), iova=0x(?P<iova>[0-9a-fA-F]++), "
                       r"fsynr=0x(?P<fsynr>[0-9a-fA-F]++), cbfrsynra=0x(?P<sid>[0-9a-fA-F]++), cb=(?P<cb>\d++)")
_SMMU_BLOCKED = re.compile(r"Blocked unknown Stream ID 0x(?P<sid>[0-9a-fA-F]++)")
_SMMU_GLOBAL = re.compile(r"Unexpected global fault, this could be serious")
_SMMU3_EVENT = re.compile(r"event 0x(?P<id>[0-9a-fA-F]{2}) received:")
_SMMU3_WORD = re.compile(r"(?:\S++ \S+: )?\s*+0x(?P<w>[0-9a-fA-F]{16})\s*+$")
_SMMU3_NEW = re.compile(r"event: (?P<name>\w++) client: (?P<client>\S++) sid: 0x(?P<sid>[0-9a-fA-F]++) "
                        r"ssid: 0x(?P<ssid>[0-9a-fA-F]++) iova: 0x(?P<iova>[0-9a-fA-F]++)")
_SMMU3_NAMES = {0x01: "F_UUT", 0x02: "C_BAD_STREAMID", 0x03: "F_STE_FETCH", 0x04: "C_BAD_STE",
                0x05: "F_BAD_ATS_TREQ", 0x06: "F_STREAM_DISABLED", 0x07: "F_TRANSL_FORBIDDEN",
                0x08: "C_BAD_SUBSTREAMID", 0x09: "F_CD_FETCH", 0x0A: "C_BAD_CD", 0x0B: "F_WALK_EABT",
                0x10: "F_TRANSLATION", 0x11: "F_ADDR_SIZE", 0x12: "F_ACCESS", 0x13: "F_PERMISSION",
                0x20: "F_TLB_CONFLICT", 0x21: "F_CFG_CONFLICT", 0x24: "E_PAGE_REQUEST"}
_SERR = re.compile(r"NMI: PCI system error \(SERR\) for reason (?P<reason>[0-9a-fA-F]++) on CPU (?P<cpu>\d++)")
# the AER patterns start at their literal; the device name before it ("0000:00:1c.0: ",
# fixed width) is read separately: a pattern starting with an optional or a character
# class would be tried at every position of the line
_AER = re.compile(r"AER: "
                  r"(?P<multi>Multiple )?(?P<sev>Corrected|Uncorrected \((?:Non-Fatal|Fatal)\)|Uncorrected)"
                  r" error (?:message )?received:? (?:id=(?P<id>[0-9a-fA-F]{4})|"
                  r"(?P<dev>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]))")
_AER_BUS_ERROR = re.compile(r"PCIe Bus Error: severity=(?P<sev>[^,]{1,128}+), type=(?P<type>[^,]{1,128}+)")
_PCI_NAME = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]: ")   # 14 characters
_PCI_NAME_AER = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]: AER: ")   # 19
_DEVNAME = re.compile(r"(?<!\S)(?P<drv>\S++) (?P<dev>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]): ")
_UNIT_PREFIX = re.compile(r"(?:\S++ )?(?P<unit>[0-9a-fA-F]++\.[\w-]++|[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}"
                          r"\.[0-7]): ")
_CLIENT_BDF = re.compile(r"[0-9a-fA-F:.]{12}")


def _amd_devname(text: str, q: int) -> str | None:
    """The PCI name in "DRIVER 0000:07:00.1: " just before position ``q``, if there."""
    if q >= 16 and _PCI_NAME.fullmatch(text, q - 14, q) and text[q - 15] == " " and not text[q - 16].isspace():
        return text[q - 14:q - 2]
    return None


def _amd_event(m: re.Match, text: str) -> FaultRecord:
    fields = dict(_KV.findall(m.group("fields")))
    rec = FaultRecord(kind="amd-vi:" + m.group("event").lower(), iommu="amd-vi", raw="")
    dev = fields.get("device") or _amd_devname(text, m.start())
    if dev:
        parts = dev.split(":")
        rec.requester = dev.lower() if len(parts) == 3 else f"{int(parts[0], 16):02x}:{parts[1].lower()}"
        if "\ufffd" in m.group(0) and not _AMD_DEVICE.fullmatch(rec.requester):
            # an undecodable byte cut the device id short: keep the event, flag the id
            token = m.group("fields").split("device=", 1)[-1].split(" ", 1)[0]
            rec.requester = None
            rec.detail.update(damaged=True, requester_unparsed=token)
    if "address" in fields:
        rec.address = int(fields["address"], 16)
    if "pasid" in fields:
        rec.pasid = int(fields["pasid"], 16)
    if "flags" in fields:
        flags = int(fields["flags"], 16)
        rec.detail["flags"] = flags
        if m.group("event") == "IO_PAGE_FAULT":
            rec.access = "write" if flags & 0x20 else "read"
    if "domain" in fields:
        rec.detail["domain"] = int(fields["domain"], 16)
    rec.reason = m.group("event")
    return rec


def _smmu3_words(rec: FaultRecord) -> None:
    words = rec.detail.get("words", [])
    if words:
        rec.detail["sid"] = words[0] >> 32
        if words[0] & (1 << 11):
            rec.pasid = (words[0] >> 12) & 0xFFFFF
    if len(words) > 1 and rec.reason in ("F_TRANSLATION", "F_ADDR_SIZE", "F_ACCESS", "F_PERMISSION"):
        rec.access = "read" if words[1] & (1 << 35) else "write"
    if len(words) > 2 and rec.reason in ("F_TRANSLATION", "F_ADDR_SIZE", "F_ACCESS", "F_PERMISSION",
                                         "F_TLB_CONFLICT", "F_WALK_EABT"):
        rec.address = words[2]


# --- the parser --------------------------------------------------------------------------

# Substrings without which no pattern below can match: a line that has none of them is not
# handed to the parser. Each substring that guards a pattern in parse_lines() contains
# one of these; keep them in step. Few and short, as each is one scan of the whole text.
_KEYWORDS = (
    "DMAR",                     # VT-d faults, dumps, table copies ("DMAR:", "DMAR-IR:")
    "Request device [",         # VT-d faults, also old "INTR-REMAP:" ones and damaged tags
    "fault",                    # "[fault reason", "DRHD: handling fault status", SMMU faults
    "callbacks suppressed",
    "IRQ remapping",
    "AMD-Vi",
    "Stream ID",
    "event",                    # SMMUv3 ("event 0x..", raw words on up to 4 lines after; "event:")
    "NMI: PCI system error",
    "AER: ",
    "PCIe Bus Error",
)
_SMMU3_WORDS = 4
# what str.splitlines() also ends a line at, besides "\n" (and "\r\n"), and runs of NUL
# (a sparse-file hole, a log file truncated under its writer), which end a line too
_OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00")
_BREAK = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00]")
_SPLIT_OTHER = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]|\x00++")
_HEXNUM_RX = re.compile(_HEXNUM)


def parse_lines(lines: Iterable[tuple[float | None, str]], source: str | None = None) -> list[FaultRecord]:
    """Parse (time, text) pairs with prefixes already removed from text. Only the first
    :data:`LINE_MAX` characters of a text are read.

    :return: records in log order
    """
    out: list[FaultRecord] = []
    pending_two_line: FaultRecord | None = None
    dump_target: FaultRecord | None = None
    smmu3: FaultRecord | None = None
    dma_by_address: dict[int, FaultRecord] = {}     # the last DMA fault at each address

    def add(rec: FaultRecord, t: float | None, text: str) -> FaultRecord:
        rec.time, rec.source, rec.raw = t, source, text
        out.append(rec)
        if rec.kind == "dma-remap" and rec.address is not None:
            dma_by_address[rec.address] = rec
        return rec

    for t, text in lines:
        if len(text) > LINE_MAX:
            text = text[:LINE_MAX]
        try:
            if smmu3 is not None:
                w = _SMMU3_WORD.match(text) if "0x" in text else None
                if w and len(smmu3.detail["words"]) < _SMMU3_WORDS:
                    smmu3.detail["words"].append(int(w.group("w"), 16))
                    smmu3.raw += "\n" + text
                    _smmu3_words(smmu3)
                    continue
                smmu3 = None
            dmar = "DMAR" in text
            if dmar:
                m = _DUMP_LINE.search(text)
                if m and dump_target is not None:
                    dump = dump_target.detail.setdefault("table_dump", [])
                    if len(dump) < TABLE_DUMP_MAX:
                        dump.append(text[m.start(1):])
                        dump_target.raw += "\n" + text
                    else:
                        dump_target.detail["table_dump_dropped"] = dump_target.detail.get("table_dump_dropped", 0) + 1
                    continue
                m = _DUMP_START.search(text) if "DMAR: Dump " in text else None
                if m:
                    dump_target = dma_by_address.get(int(m.group("iova"), 16))
                    if dump_target is not None:
                        dump_target.unit = m.group("unit")
                        dump_target.detail["table_dump"] = []
                        dump_target.raw += "\n" + text
                    continue
            dump_target = None
            if "Request device [" in text:
                m = _VTD_FAULT.search(text) if dmar else None
                if m:
                    rec = add(_vtd_fault(m), t, text)
                    pending_two_line = rec if rec.reason_code is None else None
                    continue
                m = _OLD_IR_FAULT.search(text) if "INTR-REMAP: " in text else None
                if m:
                    rec = FaultRecord(kind="intr-remap", iommu="intel-vtd", raw="",
                                      requester=_bdf(m.group("bus"), m.group("dev"), m.group("fn")),
                                      detail={"irte_index": _hex(m.group("addr"))})
                    pending_two_line = add(rec, t, text)
                    continue
                m = _VTD_DAMAGED.search(text) if "\ufffd" in text else None
                if m:
                    rec = add(_vtd_damaged(m, text), t, text)
                    pending_two_line = rec if rec.reason_code is None and "reason_unparsed" not in rec.detail else None
                    continue
            if "[fault reason " in text:
                m = _OLD_REASON.search(text)
                if m and pending_two_line is not None:
                    code = int(m.group("reason"), 10)
                    pending_two_line.reason_code = code
                    pending_two_line.reason = vtd_fault_reason(code)[1]
                    pending_two_line.raw += "\n" + text
                    pending_two_line = None
                    continue
            m = _FSTS.search(text) if "DRHD: handling fault status reg " in text else None
            if m:
                reg = int(m.group("reg"), 16)
                bits = [name for bit, name in FSTS_BITS.items() if reg & (1 << bit)]
                add(FaultRecord(kind="fault-status", iommu="intel-vtd", raw="",
                                detail={"fsts": reg, "bits": bits, "fault_record_index": (reg >> 8) & 0xFF}),
                    t, text)
                continue
            m = _SUPPRESSED.search(text) if " callbacks suppressed" in text else None
            if m:
                add(FaultRecord(kind="callbacks-suppressed", iommu="intel-vtd" if "dmar" in m.group("fn") else "other",
                                raw="", detail={"function": m.group("fn"), "suppressed": int(m.group("n"))}), t, text)
                continue
            amd = "AMD-Vi: " in text
            copy = _table_copy(text) if dmar or amd or "IRQ remapping was enabled on " in text else None
            if copy:
                m, iommu, status = copy
                rec = FaultRecord(kind="table-copy", iommu=iommu, raw="", reason=status,
                                  unit=m.groupdict().get("unit"))
                if m.groupdict().get("bus"):
                    rec.detail["bus"] = int(m.group("bus"))
                add(rec, t, text)
                continue
            m = _AMD_EVENT.search(text) if amd and "AMD-Vi: Event logged [" in text else None
            if m:
                add(_amd_event(m, text), t, text)
                continue
            m = _SMMU_CTX.search(text) if "Unhandled context fault: " in text else None
            if m:
                fsynr = int(m.group("fsynr"), 16)
                add(FaultRecord(kind="arm-smmu:context-fault", iommu="arm-smmu", raw="",
                                address=int(m.group("iova"), 16), access="write" if fsynr & 0x10 else "read",
                                unit=_unit_from_prefix(text),
                                detail={"fsr": int(m.group("fsr"), 16), "fsynr": fsynr,
                                        "sid": int(m.group("sid"), 16), "cb": int(m.group("cb"))}), t, text)
                continue
            m = _SMMU_BLOCKED.search(text) if "Blocked unknown Stream ID " in text else None
            if m:
                add(FaultRecord(kind="arm-smmu:blocked-stream", iommu="arm-smmu", raw="",
                                unit=_unit_from_prefix(text), detail={"sid": int(m.group("sid"), 16)}), t, text)
                continue
            if "Unexpected global fault" in text and _SMMU_GLOBAL.search(text):
                add(FaultRecord(kind="arm-smmu:global-fault", iommu="arm-smmu", raw="",
                                unit=_unit_from_prefix(text)), t, text)
                continue
            m = _SMMU3_EVENT.search(text) if "event 0x" in text else None
            if m:
                code = int(m.group("id"), 16)
                smmu3 = add(FaultRecord(kind="arm-smmu-v3:event", iommu="arm-smmu-v3", raw="",
                                        reason_code=code, reason=_SMMU3_NAMES.get(code, "unknown"),
                                        unit=_unit_from_prefix(text), detail={"words": []}), t, text)
                continue
            m = _SMMU3_NEW.search(text) if "event: " in text else None
            if m:
                client = m.group("client")
                add(FaultRecord(kind="arm-smmu-v3:event", iommu="arm-smmu-v3", raw="", reason=m.group("name"),
                                requester=client.lower() if _CLIENT_BDF.fullmatch(client) else None,
                                address=int(m.group("iova"), 16), unit=_unit_from_prefix(text),
                                detail={"sid": int(m.group("sid"), 16), "ssid": int(m.group("ssid"), 16),
                                        "client": client}), t, text)
                continue
            m = _SERR.search(text) if "NMI: PCI system error" in text else None
            if m:
                add(FaultRecord(kind="serr-nmi", iommu="pci", raw="", reason_code=int(m.group("reason"), 16),
                                detail={"cpu": int(m.group("cpu"))}), t, text)
                continue
            m = _AER.search(text) if "AER: " in text else None
            if m:
                port = text[m.start() - 14:m.start() - 2] if _PCI_NAME.fullmatch(text, m.start() - 14, m.start()) else None
                rec = FaultRecord(kind="aer", iommu="pci", raw="", reason=m.group("sev"),
                                  unit=port or _unit_from_prefix(text),
                                  detail={"multiple": bool(m.group("multi"))})
                if m.group("dev"):
                    rec.requester = m.group("dev").lower()
                elif m.group("id"):
                    sid = int(m.group("id"), 16)
                    rec.requester = f"{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"
                add(rec, t, text)
                continue
            if "PCIe Bus Error: " in text:
                for m in _AER_BUS_ERROR.finditer(text):       # the first behind a device name
                    q = m.start()
                    dev = (text[q - 14:q - 2] if _PCI_NAME.fullmatch(text, q - 14, q) else
                           text[q - 19:q - 7] if _PCI_NAME_AER.fullmatch(text, q - 19, q) else None)
                    if dev:
                        add(FaultRecord(kind="aer", iommu="pci", raw="", requester=dev.lower(),
                                        reason=m.group("sev"), detail={"type": m.group("type")}), t, text)
                        break
        except (ValueError, IndexError, KeyError):
            continue
    return out


# the longest literal part of each table-copy pattern: a cheap test before the pattern runs
_TABLE_COPY_KEYS = [max(re.split(r"\(\?P<\w+>[^)]*\)", rx.pattern), key=len) for rx, _, _ in _TABLE_COPY]


def _table_copy(text: str) -> tuple[re.Match, str, str] | None:
    """The first table-copy message the line holds: (match, iommu, status)."""
    for key, (rx, iommu, status) in zip(_TABLE_COPY_KEYS, _TABLE_COPY, strict=True):
        m = rx.search(text) if key in text else None
        if m:
            return m, iommu, status
    return None


def _unit_from_prefix(text: str) -> str | None:
    m = _UNIT_PREFIX.match(text)
    return m.group("unit") if m else None


def _log_lines(text: str) -> Iterator[tuple[float | None, str]]:
    """The lines of ``text`` that can matter, prefixes removed, each cut to
    :data:`LINE_MAX`, in order: those holding a keyword and the few after an SMMUv3
    event. Every run of other lines is given as a single (None, ""): such a line matters
    only as the end of a multi-line message. Lines are those of :meth:`str.splitlines`,
    with runs of NUL also ending a line. Finding them costs a few C-level scans of the
    text (``str.find``), whatever its length and shape; Python code runs only per line
    that holds a keyword."""
    n = len(text)
    starts: set[int] = set()
    for kw in _KEYWORDS:
        i = text.find(kw)
        while i >= 0:
            s = text.rfind("\n", 0, i) + 1
            e = text.find("\n", i)
            e = n if e < 0 else e
            starts.add(s)
            if kw == "event":               # an SMMUv3 event's raw words follow on the next lines
                for _ in range(_SMMU3_WORDS):
                    if e + 1 >= n:
                        break
                    starts.add(e + 1)
                    e = text.find("\n", e + 1)
                    e = n if e < 0 else e
            i = text.find(kw, e)
    end = -1            # where the last "\n"-line given ended
    follow = 0          # lines still to give after an SMMUv3 event
    skipped = False     # lines left out since the last line given
    for s in sorted(starts):
        if s > end + 1:
            skipped, follow = True, 0
        e = text.find("\n", s)
        e = n if e < 0 else e
        end = e
        if e - s <= LINE_MAX and not _BREAK.search(text, s, e):
            lines: list[str] = [text[s:e]]          # the usual line: it holds a keyword, or follows "event"
            screen = False
        else:
            region = text[s:e - 1] if text.endswith("\r", s, e) else text[s:e]     # "\r\n" is one break
            lines = _SPLIT_OTHER.split(region) if any(c in region for c in _OTHER_BREAKS) else [region]
            screen = len(lines) > 1
        for line in lines:
            if not line or (screen and not follow and not any(kw in line for kw in _KEYWORDS)):
                skipped, follow = True, 0
                continue
            if skipped:
                yield None, ""
                skipped = False
            follow = _SMMU3_WORDS if "event 0x" in line else max(follow - 1, 0)
            yield _strip(line[:LINE_MAX])


def parse_log(text: str, source: str | None = None) -> list[FaultRecord]:
    """Parse a text log: dmesg (with or without timestamps), vmcore-dmesg.txt, a serial
    console capture, or syslog/journal lines. Any text is accepted, in time linear in its
    length; to read a file, a pipe or a compressed log first, see :mod:`dumpkit.logs`.

    :param source: recorded in every record (for example the file name)
    """
    return parse_lines(_log_lines(text), source)


def parse_printk(prog, source: str = "printk") -> list[FaultRecord]:
    """Parse the printk ring buffer of a kernel (dump or live).

    :param prog: a drgn program with debug info
    """
    from drgn.helpers.linux.printk import get_printk_records

    lines = []
    for rec in get_printk_records(prog):
        text = rec.text.decode(errors="replace")
        for part in text.splitlines() or [""]:
            lines.append((rec.timestamp / 1e9, part))
    return parse_lines(lines, source)
