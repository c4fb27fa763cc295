"""What every log dialect shares: the record a log line becomes, line prefixes, and the
small interface a vendor's log module implements (:class:`LogDialect`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["FaultRecord", "LogDialect", "Emit", "LINE_MAX", "HEXNUM", "strip_prefix", "bdf", "pci_name_before",
           "unit_from_prefix", "copy_messages", "table_copy_record", "TABLES_TAKEN_OVER"]

# table-copy statuses after which the capture kernel translates through the crashed
# kernel's tables: copied into its own memory, or (AMD-Vi since 6.18) reused in place
TABLES_TAKEN_OVER = frozenset({"copied", "reused"})

#: Characters of one line that are parsed: a printk record is at most 1 KiB (2 KiB from
#: 6.1 on) plus a syslog/journal prefix; the rest of a longer line is ignored.
LINE_MAX = 8192

# Every pattern of a dialect either starts with a literal (the regex engine skips to it)
# or cannot start a match inside a run of the characters its first repeat takes, and has
# no unbounded repeat that could be scanned again from a later start: matching a line
# costs time linear in its length. HEXNUM is possessive for that reason.
HEXNUM = r"(?:0x)?[0-9a-fA-F]++"


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


#: ``emit(record)`` gives a parsed record to the parser, which stamps it with the line's
#: time, source and text, and returns it (a dialect may add later lines to its ``raw``).
Emit = Callable[[FaultRecord], FaultRecord]


class LogDialect:
    """The log lines of one IOMMU vendor (or of the PCI core). A fresh instance parses one
    log, so multi-line messages keep their state on it.

    ``keywords``: substrings without which no line of this dialect can match; a line with
    none of any dialect's keywords is never offered. Few and short: each is one scan of the
    whole text. ``follow``: (keyword, trigger, n) when up to n lines after a line holding
    ``trigger`` belong to its message although they hold no keyword.
    """

    keywords: tuple[str, ...] = ()
    follow: tuple[str, str, int] | None = None

    def line(self, time: float | None, text: str, emit: Emit) -> bool:
        """Parse one line (prefix removed, at most :data:`LINE_MAX` characters); True if it
        was this dialect's, so later dialects are not offered it. ``(None, "")`` stands for
        lines that were left out and ends any multi-line message. May raise ValueError,
        IndexError or KeyError on text that only looks like its own: the line is skipped."""
        raise NotImplementedError


_PREFIX = re.compile(
    r"^(?:<\d+>)?"                                                     # syslog priority
    r"(?:(?:[A-Z][a-z]{2} +\d+ [\d:]{8}|\d{4}-\d\d-\d\dT[\d:.+\-Z]+) \S+ kernel: )?"  # syslog / journal
    r"(?:\[ *(?P<time>\d+\.\d+)\] )?"                                   # printk timestamp
    r"(?:\[ *[CT]\d+\] )?")                                            # caller id
_PCI_NAME = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]: ")   # 14 characters
_UNIT_PREFIX = re.compile(r"(?:\S++ )?(?P<unit>[0-9a-fA-F]++\.[\w-]++|[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}"
                          r"\.[0-7]): ")


def strip_prefix(line: str) -> tuple[float | None, str]:
    """(printk time or None, the line without syslog/journal/printk prefixes)."""
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    t = float(m.group("time")) if m and m.group("time") else None
    return t, line[m.end():] if m else line


def bdf(bus: str, dev: str, fn: str, seg: str | None = None) -> str:
    """"bb:dd.f", or "ssss:bb:dd.f" with a segment, from hex text."""
    core = f"{int(bus, 16):02x}:{int(dev, 16):02x}.{int(fn)}"
    return f"{int(seg, 16):04x}:{core}" if seg else core


def pci_name_before(text: str, q: int, gap: int = 2) -> str | None:
    """The PCI name "ssss:bb:dd.f" that ends ``gap`` characters before position ``q``
    (``dev_err()`` puts "0000:07:00.1: " in front of a message), if there."""
    start = q - gap - 12
    if start >= 0 and _PCI_NAME.fullmatch(text, start, start + 14):
        return text[start:start + 12]
    return None


def unit_from_prefix(text: str) -> str | None:
    """The device or platform name a message starts with ("arm-smmu 2b400000.iommu: ")."""
    m = _UNIT_PREFIX.match(text)
    return m.group("unit") if m else None


def copy_messages(entries: list[tuple[re.Pattern, str, str]]) -> list[tuple[str, re.Pattern, str, str]]:
    """Table-copy messages as (pattern, iommu, status) made ready for
    :func:`table_copy_record`: each with the longest literal of its pattern, tested
    before the pattern runs."""
    return [(max(re.split(r"\(\?P<\w+>[^)]*\)", rx.pattern), key=len), rx, iommu, status)
            for rx, iommu, status in entries]


def table_copy_record(text: str, messages: list[tuple[str, re.Pattern, str, str]]) -> FaultRecord | None:
    """The first of ``messages`` (see :func:`copy_messages`) the line holds, as a
    "table-copy" record whose ``reason`` is the status ("attempt", "copied", "failed"…)."""
    for key, rx, iommu, status in messages:
        m = rx.search(text) if key in text else None
        if m:
            rec = FaultRecord(kind="table-copy", iommu=iommu, raw="", reason=status, unit=m.groupdict().get("unit"))
            if m.groupdict().get("bus"):
                rec.detail["bus"] = int(m.group("bus"))
            return rec
    return None
