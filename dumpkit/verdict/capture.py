"""What the capture kernel's evidence says: its logs read once and checked against the
crash, the ports it reset (its ``kdump:`` lines), the fault records it lost, the devices on
copied tables in its own dump; :class:`CaptureFacts` holds what applies to every endpoint
alike."""

from __future__ import annotations

import re
from dataclasses import dataclass

import drgn

from dumpkit.errors import InputError
from dumpkit.iommu.backends import REPORTER

__all__ = ["CaptureFacts", "CaptureMismatch", "NOT_RESET_LINE", "RESET_LINE", "check_logs", "copied_in_capture",
           "iommu_suppressed", "lost_records", "read_logs", "reset_lines"]

RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: secondary bus reset"
                        r"(?! failed)")
NOT_RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: not reset: (?P<why>.+)")
TIMESTAMP = re.compile(r"^\[ *(\d+\.\d+)\]")


class CaptureMismatch(InputError):
    """A capture log or capture dump that belongs to another crash."""


@dataclass
class CaptureFacts:
    """What the capture kernel's evidence says for every endpoint alike: whether a capture
    log was given (``logs``; ``own`` lists the crashed kernel's own logs given instead), its
    table-copy outcomes (``copies``) and when it took over the IOMMU (``takeover``, log
    seconds), the devices on copied tables in the capture dump (``copied``), fault records it
    lost or a log cut short."""

    logs: bool
    own: list[str]
    copies: set[str]
    takeover: float | None
    copied: set[str] | None
    lost: str
    cut: str
    suppressed: int
    have_iommu: bool
    crashk: tuple[int, int] | None
    capture_dump: str | None


def read_logs(capture_logs) -> list:
    """Each capture log read once (a pipe or FIFO works, compressed logs are decompressed):
    :class:`dumpkit.logs.LogText` objects pass through, paths are read."""
    from dumpkit.logs import log_text

    return [log_text(p, what="capture log") for p in capture_logs]


def check_logs(prog: drgn.Program, texts: dict[str, str], force: bool, warnings: list[str]):
    """Each capture log against this crash: (status by path, match record by path).

    :raises CaptureMismatch: a log of another crash, unless ``force`` (then a warning)
    """
    from dumpkit.kdump.match import match_capture_log

    checks, matches = {}, {}
    for path, text in texts.items():
        m = match_capture_log(prog, text)
        checks[path] = m.status
        matches[path] = {"status": m.status, "reasons": list(m.reasons), "facts": dict(m.facts)}
        if m.status == "mismatch":
            if not force:
                raise CaptureMismatch(f"capture log {path} is from another crash ({m.reasons[0]})",
                                      "pass this crash's capture log, or --force to use it anyway")
            warnings.append(f"capture log {path} does not match this crash ({m.reasons[0]}); used because forced")
        elif m.status == "undecidable":
            warnings.append(f"capture log {path}: cannot tell whether it belongs to this crash ({m.reasons[0]})")
    return checks, matches


def reset_lines(texts: list[str]) -> tuple[dict[str, float | None], dict[str, str]]:
    """The ports the capture kernel reset (port -> log seconds, None without a timestamp)
    and those it did not, with why."""
    from dumpkit.logs import grep_lines

    reset: dict[str, float | None] = {}
    not_reset: dict[str, str] = {}
    for text in texts:
        for line in grep_lines(text, "kdump: "):       # only the lines that can match
            body = line.split("] ", 1)[-1] if line.startswith("[") else line
            m = RESET_LINE.search(body)
            if m:
                ts = TIMESTAMP.match(line)
                reset[m.group("port")] = float(ts.group(1)) if ts else None
                continue
            m = NOT_RESET_LINE.search(body)
            if m:
                not_reset[m.group("port")] = m.group("why").strip()
    return reset, not_reset


def copied_in_capture(capture_dump) -> set[str] | None:
    """The devices whose translation entries the capture kernel copied (its own dump)."""
    from dumpkit.iommu.collect import collect_iommu

    state = collect_iommu(capture_dump)
    return {e.bdf for e in state.entries if e.copied}


def iommu_suppressed(faults: list) -> int:
    """Messages of IOMMU fault reporters (dmar_fault, amd_iommu_report_page_fault,
    arm_smmu_*…) the kernel's rate limit dropped; other functions' notices do not count."""
    return sum(f.detail.get("suppressed", 0) for f in faults if f.kind == "callbacks-suppressed"
               and REPORTER.search(f.detail.get("function", "")))


def lost_records(faults: list) -> str:
    """What the capture log says of fault records it did not print: rate-limited messages
    of the IOMMU's fault reporter and fault-recording overflow (VT-d FSTS.PFO). Empty if none."""
    parts = []
    suppressed = iommu_suppressed(faults)
    if suppressed:
        parts.append(f"{suppressed} suppressed messages")
    if any("PFO" in f.detail.get("bits", ()) for f in faults if f.kind == "fault-status"):
        parts.append("fault-record overflow")
    return ", ".join(parts)
