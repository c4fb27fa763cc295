"""IOMMU fault records from kernel logs, in every format since 2.6.

One parser serves text logs (capture kernel dmesg, vmcore-dmesg.txt, serial console,
syslog/journal exports) and a dump's printk buffer. Each IOMMU vendor's lines are read by
its dialect (:class:`dumpkit.iommu.logbase.LogDialect`, in ``<vendor>/log.py``: VT-d
faults, table dumps and table copies; AMD-Vi events and table copies; ARM SMMU v2/v3
faults); the PCI core's own lines (SERR NMIs, AER, rate-limit notices) are read here. It
never raises on text it does not understand: such lines are skipped.

It is linear in its input, whatever the input: only the first :data:`LINE_MAX` characters
of a line are read (a kernel log record is far shorter; a record at the start of an
enormous line is still found), runs of NUL characters (holes of sparse or truncated log
files) end a line, lines are screened by the dialects' keywords before any pattern runs,
and every pattern is anchored or bounded so that no line costs more than a constant times
its (capped) length.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from dumpkit.iommu.backends import BACKENDS
from dumpkit.iommu.logbase import LINE_MAX, FaultRecord, LogDialect, pci_name_before, strip_prefix, unit_from_prefix

__all__ = ["FaultRecord", "parse_log", "parse_lines", "parse_printk", "LINE_MAX", "DIALECTS"]


class PciLog(LogDialect):
    """The PCI core's lines: SERR NMIs, AER errors, and "callbacks suppressed" notices of
    rate-limited messages no vendor claimed."""

    keywords = ("callbacks suppressed", "NMI: PCI system error", "AER: ", "PCIe Bus Error")
    _SUPPRESSED = re.compile(r"(?<!\w)(?P<fn>\w++): (?P<n>\d++) callbacks suppressed")
    _SERR = re.compile(r"NMI: PCI system error \(SERR\) for reason (?P<reason>[0-9a-fA-F]++) on CPU (?P<cpu>\d++)")
    # the AER patterns start at their literal; the device name before it ("0000:00:1c.0: ",
    # fixed width) is read separately: a pattern starting with an optional or a character
    # class would be tried at every position of the line
    _AER = re.compile(r"AER: "
                      r"(?P<multi>Multiple )?(?P<sev>Corrected|Uncorrected \((?:Non-Fatal|Fatal)\)|Uncorrected)"
                      r" error (?:message )?received:? (?:id=(?P<id>[0-9a-fA-F]{4})|"
                      r"(?P<dev>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]))")
    _AER_BUS_ERROR = re.compile(r"PCIe Bus Error: severity=(?P<sev>[^,]{1,128}+), type=(?P<type>[^,]{1,128}+)")

    def line(self, time: float | None, text: str, emit) -> bool:
        m = self._SUPPRESSED.search(text) if " callbacks suppressed" in text else None
        if m:
            emit(FaultRecord(kind="callbacks-suppressed", iommu="other", raw="",
                             detail={"function": m.group("fn"), "suppressed": int(m.group("n"))}))
            return True
        m = self._SERR.search(text) if "NMI: PCI system error" in text else None
        if m:
            emit(FaultRecord(kind="serr-nmi", iommu="pci", raw="", reason_code=int(m.group("reason"), 16),
                             detail={"cpu": int(m.group("cpu"))}))
            return True
        m = self._AER.search(text) if "AER: " in text else None
        if m:
            rec = FaultRecord(kind="aer", iommu="pci", raw="", reason=m.group("sev"),
                              unit=pci_name_before(text, m.start()) or unit_from_prefix(text),
                              detail={"multiple": bool(m.group("multi"))})
            if m.group("dev"):
                rec.requester = m.group("dev").lower()
            elif m.group("id"):
                sid = int(m.group("id"), 16)
                rec.requester = f"{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"
            emit(rec)
            return True
        if "PCIe Bus Error: " in text:
            for m in self._AER_BUS_ERROR.finditer(text):       # the first behind a device name
                q = m.start()
                dev = pci_name_before(text, q) or (pci_name_before(text, q - 5) if text.startswith("AER: ", q - 5)
                                                   else None)
                if dev:
                    emit(FaultRecord(kind="aer", iommu="pci", raw="", requester=dev.lower(),
                                     reason=m.group("sev"), detail={"type": m.group("type")}))
                    return True
        return False


#: The dialects, in the order a line is offered to them: the backends' in their probe order
#: (:mod:`dumpkit.iommu.backends`), then the PCI core's.
DIALECTS: tuple[type[LogDialect], ...] = (*(b.log for b in BACKENDS if b.log), PciLog)
_KEYWORDS = tuple(dict.fromkeys(kw for d in DIALECTS for kw in d.keywords))
_FOLLOW = [d.follow for d in DIALECTS if d.follow]
# what str.splitlines() also ends a line at, besides "\n" (and "\r\n"), and runs of NUL
# (a sparse-file hole, a log file truncated under its writer), which end a line too; a
# single NUL is a bad byte inside its line, which keeps the line's record
_OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00")
_BREAK = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00]")
_SPLIT_OTHER = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]|\x00\x00++")


def parse_lines(lines: Iterable[tuple[float | None, str]], source: str | None = None) -> list[FaultRecord]:
    """Parse (time, text) pairs with prefixes already removed from text. Only the first
    :data:`LINE_MAX` characters of a text are read.

    :return: records in log order
    """
    out: list[FaultRecord] = []
    dialects = [d() for d in DIALECTS]
    for t, text in lines:
        if len(text) > LINE_MAX:
            text = text[:LINE_MAX]

        def emit(rec: FaultRecord, _t=t, _text=text) -> FaultRecord:
            rec.time, rec.source, rec.raw = _t, source, _text
            out.append(rec)
            return rec

        for dialect in dialects:
            try:
                if dialect.line(t, text, emit):
                    break
            except (ValueError, IndexError, KeyError):
                break
    return out


def _follow_lines(line: str, follow: int) -> int:
    """How many lines after ``line`` still belong to a multi-line message."""
    for _kw, trigger, n in _FOLLOW:
        if trigger in line:
            return n
    return max(follow - 1, 0)


def _log_lines(text: str) -> Iterator[tuple[float | None, str]]:
    """The lines of ``text`` that can matter, prefixes removed, each cut to
    :data:`LINE_MAX`, in order: those holding a keyword and the few after the start of a
    multi-line message. Every run of other lines is given as a single (None, ""): such a
    line matters only as the end of a multi-line message. Lines are those of
    :meth:`str.splitlines`, with runs of NUL also ending a line. Finding them costs a few
    C-level scans of the text (``str.find``), whatever its length and shape; Python code
    runs only per line that holds a keyword."""
    n = len(text)
    follow_after = {kw: lines for kw, _trigger, lines in _FOLLOW}
    starts: set[int] = set()
    for kw in _KEYWORDS:
        i = text.find(kw)
        while i >= 0:
            s = text.rfind("\n", 0, i) + 1
            e = text.find("\n", i)
            e = n if e < 0 else e
            starts.add(s)
            for _ in range(follow_after.get(kw, 0)):
                if e + 1 >= n:
                    break
                starts.add(e + 1)
                e = text.find("\n", e + 1)
                e = n if e < 0 else e
            i = text.find(kw, e)
    end = -1            # where the last "\n"-line given ended
    follow = 0          # lines still to give after the start of a multi-line message
    skipped = False     # lines left out since the last line given
    for s in sorted(starts):
        if s > end + 1:
            skipped, follow = True, 0
        e = text.find("\n", s)
        e = n if e < 0 else e
        end = e
        if e - s <= LINE_MAX and not _BREAK.search(text, s, e):
            lines: list[str] = [text[s:e]]          # the usual line: it holds a keyword, or follows one
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
            follow = _follow_lines(line, follow)
            yield strip_prefix(line[:LINE_MAX])


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


# former private name, still imported by callers that strip prefixes themselves
_strip = strip_prefix
