"""Does a capture-kernel log belong to this crash? A capture log and a first-kernel dump
share facts: the capture kernel's command line carries the ``elfcorehdr=`` address of the
ELF core header the crashed kernel's kexec placed, its initrd sits where the crashed
kernel's crash image put it, its memory map is the crashed kernel's crashkernel
reservation, it reads the clock seconds after the crash, it enumerates the same PCI
functions, and a vmcore-dmesg file is the crashed kernel's own log. Each fact is judged only where both sides hold it: a fact that
cannot be had (a kernel field only one load path sets, a log without a clock line) is
named, never counted against the log. Anything that contradicts (another crash, another
machine) is refused before it can change a verdict.

The capture path matters: kexec_file_load records the header's address in
``kimage.elf_load_addr``; kexec_load (``kexec -p`` without ``-s``, the default of Debian's
and Ubuntu's kdump-tools) leaves it 0, and the header is then one of the crash image's
segments, which both paths record."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

import drgn

from dumpkit.kdump.collect import KdumpState, collect_kdump

__all__ = ["LogMatch", "match_capture_log"]

ELFCOREHDR_ARG = re.compile(r"\belfcorehdr=(?:(\d{1,20}[KkMm]?)@)?(0x[0-9a-fA-F]{1,16}|\d{1,20})([KkMm])?")
MAX_LINE = 8192
# what of a log the facts are looked for in: a capture kernel prints its command line,
# memory map, initrd, PCI functions and clock reading in its first seconds; a crashed
# kernel's last records end its log. Beyond these windows a huge log costs no more.
BOOT_WINDOW = 4 << 20
TAIL_WINDOW = 4 << 20
# the memory map as the capture kernel prints it: "usable" up to 6.x, "System RAM" in 7.x
# (the e820 printout rework of 6.16), possibly after a size column; "user:" for memmap=
USABLE = re.compile(r"(?:BIOS-e820|user): \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]"
                    r"[ \t]+(?:[\d.]+ ?[KMGTP]i?B[ \t]+)?(?:usable|System RAM)\b")
RAMDISK = re.compile(r"\] RAMDISK: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]")
# rtc_hctosys: "rtc_cmos 00:00: setting system clock to 2026-11-23T23:53:13 UTC (1795478000)"
CLOCK_SET = re.compile(r"^\[ *(\d+\.\d+)\] [^\n]{0,80}?setting system clock to [^(\n]{0,60}\((\d{1,12})\)",
                       re.MULTILINE)
# PCI enumeration: "pci 0000:02:00.0: [8086:10d3] type 00 class 0x020000"
PCI_FUNCTION = re.compile(r"\] pci ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): \[([0-9a-f]{4}):([0-9a-f]{4})\] type")
# "[    7.657070] text", or with the caller id (CONFIG_PRINTK_CALLER, makedumpfile 1.7.6+
# --dump-dmesg) "[    7.657070][  T123] text" (or with a space between)
PRINTK_LINE = re.compile(r"^\[ *(\d{1,10})\.(\d{6})\] ?(?:\[ *[TC]\d+\] )?(.+)$", re.MULTILINE)
CRASH_LINE = re.compile(r"^\[ *(\d+\.\d+)\] (?:Kernel panic - not syncing|sysrq: Trigger a crash)", re.MULTILINE)
# a capture kernel reads the clock this long after the crash at most: panic notifiers,
# the 10 s CMA wait of crashkernel=,cma, and a slow boot (70 s to /init under emulation on
# a busy host); and at most this long before it (the clock's one-second steps, an RTC a
# little behind the kernel's time)
CLOCK_AFTER_S = 5 * 60
CLOCK_BEFORE_S = 2 * 60


@dataclass
class LogMatch:
    """``status``: "consistent", "mismatch" or "undecidable"; ``reasons`` say which facts
    agreed or disagreed (disagreements first); ``facts`` name each fact used and how it
    came out ("agree", "disagree", "unknown: why")."""

    status: str
    reasons: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


class _Judge:
    """Collects each fact's outcome."""

    def __init__(self):
        self.agree: list[str] = []
        self.disagree: list[str] = []
        self.facts: dict[str, str] = {}

    def fact(self, name: str, ok: bool, text: str) -> None:
        (self.agree if ok else self.disagree).append(text)
        self.facts[name] = "agree" if ok else "disagree"

    def unknown(self, name: str, why: str) -> None:
        self.facts[name] = f"unknown: {why}"


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


def _capture_boot(text: str, tries: int = 64) -> tuple[int, int] | None:
    """(start, end) of the last boot in ``text`` whose command line has elfcorehdr= (a
    serial console holds several boots: the capture kernel's is judged). Found from the
    end with ``str.find`` and bounded work, whatever the text's size and shape."""
    pos = len(text)
    for _ in range(tries):
        pos = text.rfind("elfcorehdr=", 0, pos)
        if pos < 0:
            return None
        line = text.rfind("\n", max(0, pos - MAX_LINE), pos) + 1 or max(0, pos - MAX_LINE)
        if text.find("ommand line:", line, pos) >= 0:
            boot = text.rfind("] Linux version ", 0, line)
            start = 0 if boot < 0 else text.rfind("\n", 0, boot) + 1
            end = text.find("] Linux version ", pos)
            end = len(text) if end < 0 else text.rfind("\n", 0, end) + 1
            return start, end
    return None


def _size(num: str, suffix: str | None) -> int:
    value = int(num, 0)
    return value << {"k": 10, "m": 20}.get((suffix or "").lower(), 0)


def _ranges(ranges) -> str:
    return ", ".join(f"{a:#x}-{b:#x}" for a, b in ranges)


def _segment_of(kd: KdumpState, addr: int):
    return next(((m, n) for m, n in kd.crash_kernel_segments if m <= addr < m + n), None)


def _judge_elfcorehdr(j: _Judge, kd: KdumpState, addr: int) -> None:
    if kd.crash_kernel_elf_load_addr is not None:
        j.fact("elfcorehdr", addr == kd.crash_kernel_elf_load_addr,
               f"elfcorehdr={addr:#x} in the log, the crashed kernel's kexec_file_load put the ELF core "
               f"header at {kd.crash_kernel_elf_load_addr:#x}")
    elif kd.crash_kernel_segments:
        seg = _segment_of(kd, addr)
        via = f"loaded with {kd.crash_kernel_call}" if kd.crash_kernel_call else "loaded"
        j.fact("elfcorehdr", seg is not None,
               f"elfcorehdr={addr:#x} in the log "
               + (f"lies in the crashed kernel's crash image segment {seg[0]:#x}+{seg[1]:#x} ({via})" if seg else
                  f"is in none of the crashed kernel's {len(kd.crash_kernel_segments)} crash image segments "
                  f"({via}: {_ranges((m, m + n - 1) for m, n in kd.crash_kernel_segments)})"))
    elif kd.crash_kernel_reserved:
        lo, hi = kd.crash_kernel_reserved
        j.fact("elfcorehdr", lo <= addr <= hi,
               f"elfcorehdr={addr:#x} in the log, crashkernel reservation {lo:#x}-{hi:#x}")
    else:
        j.unknown("elfcorehdr", "the dump shows neither a loaded crash image nor a crashkernel reservation")


def _judge_memory_map(j: _Judge, kd: KdumpState, boot: str) -> None:
    if not kd.crash_memory:
        j.unknown("memory_map", "the dump shows no crashkernel reservation")
        return
    usable = [(int(a, 16), int(b, 16)) for a, b in USABLE.findall(boot)]
    high = [(a, b) for a, b in usable if b >= 1 << 20]   # the first MiB is always handed over
    if not high:
        j.unknown("memory_map", "the log has no memory map")
        return
    outside = [(a, b) for a, b in high if not any(lo <= a and b <= hi for lo, hi in kd.crash_memory)]
    j.fact("memory_map", not outside,
           f"the log's usable memory {_ranges(high)} "
           + (f"lies in the crash memory {_ranges(kd.crash_memory)}" if not outside else
              f"is not all in the crash memory {_ranges(kd.crash_memory)} ({_ranges(outside)} outside)"))


def _judge_initrd(j: _Judge, kd: KdumpState, boot: str) -> None:
    m = RAMDISK.search(boot)
    if not m:
        j.unknown("initrd", "the log names no initrd")
        return
    if not kd.crash_kernel_segments:
        j.unknown("initrd", "the dump shows no crash image segments")
        return
    start, end = int(m.group(1), 16), int(m.group(2), 16)
    seg = next(((s, n) for s, n in kd.crash_kernel_segments if s == start and end < s + n), None)
    j.fact("initrd", seg is not None,
           f"the capture kernel's initrd {start:#x}-{end:#x} "
           + ("is a segment of the crashed kernel's crash image" if seg else
              "is none of the crashed kernel's crash image segments"))


def _clock_reading(text: str) -> tuple[float, int] | None:
    """(uptime, wall-clock seconds) of the first clock-from-RTC line in ``text``."""
    m = CLOCK_SET.search(text)
    return (float(m.group(1)), int(m.group(2))) if m else None


def _crash_clock(prog: drgn.Program) -> tuple[int | None, int | None]:
    """The crash's wall-clock time (VMCOREINFO CRASHTIME) and, when the crashed kernel's
    own boot-time RTC reading is still in its log, the RTC's offset from the kernel's
    clock (so that an RTC kept in local time, or reset at boot, still compares)."""
    from dumpkit.target.dump import vmcoreinfo_fields

    crash = vmcoreinfo_fields(prog).get("CRASHTIME")
    if crash is None or not crash.strip().lstrip("-").isdigit():
        return None, None
    crash_s = int(crash)
    try:
        from drgn.helpers.linux.printk import get_printk_records

        records = get_printk_records(prog)
    except (drgn.FaultError, LookupError, AttributeError, ValueError):
        return crash_s, None
    boot = next((r for r in records[:4096] if b"setting system clock to" in r.text), None)
    if boot is None or not records:
        return crash_s, None
    m = re.search(rb"\((\d{1,12})\)", boot.text)
    if not m:
        return crash_s, None
    # the RTC at the crash, as the crashed kernel's boot reading predicts it
    rtc_at_crash = int(m.group(1)) + (records[-1].timestamp - boot.timestamp) / 1e9
    return crash_s, round(crash_s - rtc_at_crash)


def _judge_clock(j: _Judge, prog: drgn.Program, boot: str) -> None:
    reading = _clock_reading(boot)
    if reading is None:
        j.unknown("clock", "the log has no clock-from-RTC line")
        return
    crash_s, offset = _crash_clock(prog)
    if crash_s is None:
        j.unknown("clock", "the dump's VMCOREINFO has no CRASHTIME")
        return
    uptime, wall = reading
    booted = wall - uptime           # the capture kernel's start, by its RTC
    deltas = [booted - crash_s] + ([booted + offset - crash_s] if offset is not None else [])
    fits = [d for d in deltas if -CLOCK_BEFORE_S <= d <= CLOCK_AFTER_S]
    when = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if fits:
        j.fact("clock", True, f"the capture kernel started {fits[0]:.0f} s after the crash (its clock read {when})")
    elif offset is not None:
        j.fact("clock", False, f"the capture kernel started {deltas[-1]:+.0f} s from this crash (its clock read "
                               f"{when}, corrected by the crashed kernel's own RTC reading): another crash")
    else:
        # without the crashed kernel's own RTC reading a clock kept in local time or reset
        # to a default cannot be told from another crash: not counted against the log
        j.unknown("clock", f"the capture kernel's clock read {when}, {deltas[0]:+.0f} s from the crash; "
                           "the crashed kernel's log no longer holds its own RTC reading to correct it")


def _crash_functions(prog: drgn.Program) -> dict[str, tuple[int, int]] | None:
    """BDF -> (vendor, device) of the crashed kernel's PCI functions, None if unreadable."""
    from dumpkit.target.walk import pci_devices

    out = {}
    for name, pdev in pci_devices(prog)[0]:
        try:
            out[name] = (pdev.vendor.value_(), pdev.device.value_())
        except drgn.FaultError:
            continue
    return out or None


def _judge_pci(j: _Judge, prog: drgn.Program, boot: str) -> None:
    """The capture kernel enumerates the same hardware. Differences are legitimate (SR-IOV
    VFs the first kernel's driver created, a hot-removed function found again), so only a
    capture kernel that finds most of its functions missing or different is another machine."""
    seen = {bdf: (int(v, 16), int(d, 16)) for bdf, v, d in PCI_FUNCTION.findall(boot)}
    if not seen:
        j.unknown("pci", "the log does not show the PCI enumeration")
        return
    crashed = _crash_functions(prog)
    if crashed is None:
        j.unknown("pci", "the dump's PCI device list is unreadable")
        return
    same = sum(crashed.get(bdf) == ids for bdf, ids in seen.items())
    differ = [bdf for bdf, ids in seen.items() if crashed.get(bdf) != ids]
    if same * 2 > len(seen):
        j.fact("pci", True, f"the capture kernel found {same} of its {len(seen)} PCI functions in the crashed "
                            "kernel's tree" + (f" (not: {', '.join(differ[:4])})" if differ else ""))
    else:
        j.fact("pci", False, f"the capture kernel found only {same} of its {len(seen)} PCI functions in the "
                             f"crashed kernel's tree (e.g. {', '.join(differ[:4])}): another machine or topology")


def _printk_tail(prog: drgn.Program, n: int = 8) -> list[tuple[int, str]]:
    """(timestamp in µs, text) of the dump's last ``n`` printk records."""
    from drgn.helpers.linux.printk import get_printk_records

    records = get_printk_records(prog)
    return [(r.timestamp // 1000, r.text.decode(errors="replace").strip()) for r in records[-n:] if r.text]


def _judge_own_log(j: _Judge, prog: drgn.Program, text: str, name: str = "printk_tail") -> None:
    """A log without capture-kernel facts may be the crashed kernel's own (vmcore-dmesg,
    makedumpfile --dump-dmesg, kdump-tools' dmesg.STAMP); a serial console holds it before
    the capture kernel's boot (``name`` "console_tail")."""
    what = "the console before the capture kernel's boot" if name == "console_tail" else "the log"
    try:
        tail = _printk_tail(prog)
    except (drgn.FaultError, LookupError, AttributeError):
        j.unknown(name, "the dump's printk buffer is unreadable")
        return
    if not tail:
        j.unknown(name, "the dump's printk buffer is empty")
        return
    # a record is found by its text and its time: two crashes down one code path print
    # the same lines (a register dump, a stack) at other times
    times: dict[str, set[int]] = {}
    # regex scans of a long text cost a second each: first ask str.find whether they can match
    records = PRINTK_LINE.findall(text) if text.startswith("[") or "\n[" in text else []
    for sec, usec, line in records:
        times.setdefault(line.strip(), set()).add(int(sec) * 1_000_000 + int(usec))
    found = sum(any(abs(us - t) <= 1 for t in times.get(line, ())) for us, line in tail)
    if found == len(tail):
        j.fact(name, True, f"{what} holds the dump's last {len(tail)} printk records at their times"
                           + (" (a vmcore-dmesg)" if name == "printk_tail" else ""))
    elif found == 0 and ("Kernel panic - not syncing" in text or "sysrq: Trigger a crash" in text) \
            and CRASH_LINE.search(text):
        j.fact(name, False, f"{what} shows a crashed kernel that ends in another crash: it holds "
                            f"none of the dump's last {len(tail)} printk records")
    else:
        j.unknown(name, f"{what} holds {found} of the dump's last {len(tail)} printk records")


def match_capture_log(prog: drgn.Program, text: str) -> LogMatch:
    """Check a capture-kernel log (or vmcore-dmesg) against the crashed kernel's dump.

    :param prog: the first (crashed) kernel
    :param text: the log's text
    """
    kd = collect_kdump(prog)
    j = _Judge()
    # a serial console holds several boots: judge the capture kernel's (elfcorehdr= given)
    found = _capture_boot(text)
    capture = found is not None
    if capture:
        start, end = found
        boot, before = text[start:min(end, start + BOOT_WINDOW)], text[max(0, start - TAIL_WINDOW):start]
        if ("\n[" in before or before.startswith("[")) and PRINTK_LINE.search(before):
            # a serial console: the crashed kernel's last words come just before
            _judge_own_log(j, prog, before, "console_tail")
        m = _elfcorehdr(boot)
        _judge_elfcorehdr(j, kd, _size(m.group(2), m.group(3)))
        _judge_memory_map(j, kd, boot)
        _judge_initrd(j, kd, boot)
        _judge_clock(j, prog, boot)
        _judge_pci(j, prog, boot)
    else:
        _judge_own_log(j, prog, text[-TAIL_WINDOW:])
    if j.disagree:
        return LogMatch("mismatch", j.disagree + j.agree, j.facts)
    if j.agree:
        return LogMatch("consistent", j.agree, j.facts)
    why = [v.removeprefix("unknown: ") for v in j.facts.values()]
    if capture:
        return LogMatch("undecidable", why or ["the log's capture-kernel facts cannot be checked"], j.facts)
    return LogMatch("undecidable", ["no elfcorehdr= in the log, and it is not this crash's own log"
                                    + (f" ({why[0]})" if why else "")], j.facts)
