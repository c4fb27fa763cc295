"""Does a capture-kernel log belong to this crash? A capture log and a first-kernel dump
share facts: the capture kernel's command line carries the ``elfcorehdr=`` address the
crashed kernel's kexec chose, its memory map is the crashed kernel's crashkernel
reservation, and a vmcore-dmesg file is the crashed kernel's own log. Anything else
(another crash, another machine) is refused before it can change a verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import drgn

__all__ = ["LogMatch", "match_capture_log"]

ELFCOREHDR_ARG = re.compile(r"\belfcorehdr=(?:(\d{1,20}[KkMm]?)@)?(0x[0-9a-fA-F]{1,16}|\d{1,20})([KkMm])?")
MAX_LINE = 8192


def _elfcorehdr(text: str):
    """The elfcorehdr= argument of the first kernel command line in ``text``. Linear: only
    lines holding "ommand line:" are searched, each up to 8 KiB."""
    pos = 0
    while True:
        i = text.find("ommand line:", pos)
        if i < 0:
            return None
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        m = ELFCOREHDR_ARG.search(text, i, min(end, i + MAX_LINE))
        if m:
            return m
        pos = end + 1
USABLE = re.compile(r"(?:BIOS-e820|user): \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] usable")
BOOT = re.compile(r"(?=^\[ *0\.0+\] Linux version )", re.MULTILINE)
PRINTK_LINE = re.compile(r"^\[ *\d+\.\d+\] (.+)$", re.MULTILINE)


@dataclass
class LogMatch:
    """``status``: "consistent", "mismatch" or "undecidable"; ``reasons`` say which facts
    agreed or disagreed."""

    status: str
    reasons: list[str] = field(default_factory=list)


def _size(num: str, suffix: str | None) -> int:
    value = int(num, 0)
    return value << {"k": 10, "m": 20}.get((suffix or "").lower(), 0)


def _crash_facts(prog: drgn.Program) -> dict:
    facts: dict = {}
    try:
        res = prog["crashk_res"]
        if res.end.value_() > res.start.value_():
            facts["crashkernel"] = (res.start.value_(), res.end.value_())
    except (KeyError, LookupError, drgn.FaultError):
        pass
    try:
        image = prog["kexec_crash_image"]
        if image and image.type_.type.has_member("elf_load_addr"):   # kexec_file_load (3.17+)
            facts["elf_load_addr"] = image.elf_load_addr.value_()
    except (KeyError, LookupError, drgn.FaultError):
        pass
    return facts


def _printk_tail(prog: drgn.Program, n: int = 8) -> list[str]:
    from drgn.helpers.linux.printk import get_printk_records

    records = get_printk_records(prog)
    return [r.text.decode(errors="replace") for r in records[-n:] if r.text]


def match_capture_log(prog: drgn.Program, text: str) -> LogMatch:
    """Check a capture-kernel log (or vmcore-dmesg) against the crashed kernel's dump.

    :param prog: the first (crashed) kernel
    :param text: the log's text
    """
    facts = _crash_facts(prog)
    agree, disagree = [], []
    # a serial console holds several boots: judge the capture kernel's (elfcorehdr= given)
    boots = [b for b in BOOT.split(text) if b.strip()]
    capture = [b for b in boots if _elfcorehdr(b)]
    if capture:
        boot = capture[-1]
        m = _elfcorehdr(boot)
        addr = _size(m.group(2), m.group(3))
        if "elf_load_addr" in facts:
            (agree if addr == facts["elf_load_addr"] else disagree).append(
                f"elfcorehdr={addr:#x} in the log, the crashed kernel loaded it at {facts['elf_load_addr']:#x}")
        elif "crashkernel" in facts:
            lo, hi = facts["crashkernel"]
            (agree if lo <= addr <= hi else disagree).append(
                f"elfcorehdr={addr:#x} in the log, crashkernel reservation {lo:#x}-{hi:#x}")
        if "crashkernel" in facts:
            lo, hi = facts["crashkernel"]
            usable = [(int(a, 16), int(b, 16)) for a, b in USABLE.findall(boot)]
            high = [(a, b) for a, b in usable if b >= 1 << 20]   # the first MiB is always handed over
            if high:
                inside = all(lo <= a and b <= hi for a, b in high)
                (agree if inside else disagree).append(
                    f"the log's usable memory {', '.join(f'{a:#x}-{b:#x}' for a, b in high)} "
                    f"{'lies in' if inside else 'is not'} the crashkernel reservation {lo:#x}-{hi:#x}")
    if not agree and not disagree:
        # no capture-kernel facts: perhaps the crashed kernel's own log (vmcore-dmesg)
        try:
            tail = _printk_tail(prog)
        except (drgn.FaultError, LookupError, AttributeError):
            tail = []
        if tail:
            lines = {line.strip() for line in PRINTK_LINE.findall(text)}
            found = sum(t.strip() in lines for t in tail)
            if found == len(tail):
                agree.append(f"the log holds the dump's last {len(tail)} printk records (a vmcore-dmesg)")
            elif found == 0 and lines:
                return LogMatch("undecidable", ["no elfcorehdr= or memory map in the log, and it does not hold "
                                                "the dump's last printk records"])
    if disagree:
        return LogMatch("mismatch", disagree + agree)
    if agree:
        return LogMatch("consistent", agree)
    return LogMatch("undecidable", ["the log shows neither the capture kernel's command line nor its memory map"])
