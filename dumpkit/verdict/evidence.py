"""Everything one dump and its capture evidence say, gathered once per dump
(:func:`gather` → :class:`DumpEvidence`): the logs (checked against the crash), the faults
(parsed once), the IOMMU state, the PCI tree, the capture kernel's facts. Each endpoint's
claims are then read from it (:mod:`dumpkit.verdict.judging`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import drgn

from dumpkit.kernel import kexec
from dumpkit.verdict.capture import (CaptureFacts, check_logs, copied_in_capture, iommu_suppressed, lost_records,
                                     read_logs, reset_lines)

__all__ = ["DumpEvidence", "gather"]

CAPTURE_DUMP_WARNING = ("this dump is of a capture (kdump) kernel, not of the crashed kernel: the claims below "
                        "are about the capture kernel's own devices; judge the crashed kernel's vmcore and pass "
                        "this one as --capture-dump")


@dataclass
class DumpEvidence:
    """Everything a dump and its capture evidence say, gathered once; each endpoint's
    claims are read from it."""

    prog: drgn.Program
    tree: object
    state: object                   # dumpkit.iommu.model.IommuState
    pdevs: dict                     # every struct pci_dev on the kernel's list, by BDF
    capture: CaptureFacts
    capture_prog: drgn.Program | None
    texts: dict[str, str]           # every log given, by path
    ctexts: dict[str, str]          # those that are the capture kernel's
    checks: dict[str, str]
    matches: dict[str, dict]
    reset: dict[str, float | None]
    not_reset: dict[str, str]
    faults_by_dev: dict[str, list]
    alias_notes: dict[str, str]
    errors: list[str]
    warnings: list[str]


def gather(dump, capture_logs, capture_dump, force: bool) -> DumpEvidence:
    """Logs (checked against the crash), faults, IOMMU state, PCI tree and the capture
    kernel's facts, once per dump.

    :raises CaptureMismatch: a capture log from another crash, unless ``force``
    """
    from dumpkit.iommu.collect import collect_iommu
    from dumpkit.target.walk import pci_devices

    errors: list[str] = []
    warnings: list[str] = [CAPTURE_DUMP_WARNING] if dump.kdump().capture_kernel else []
    prog = dump.prog
    logs = read_logs(capture_logs)
    texts = {log.path: log.text for log in logs}
    warnings += [w for log in logs for w in log.warnings]
    checks, matches = check_logs(prog, texts, force, warnings)
    faults, sources = _faults(prog, texts, errors)
    state = collect_iommu(dump, faults=faults, log_sources=sources)
    errors += state.errors
    tree = dump.pci()
    errors += list(getattr(tree, "errors", []) or [])
    # a log that is the crashed kernel's own (vmcore-dmesg) holds nothing of the capture kernel
    own = [p for p, mt in matches.items() if "printk_tail" in mt["facts"] and "elfcorehdr" not in mt["facts"]]
    own_names = {Path(p).name for p in own}
    ctexts = {p: t for p, t in texts.items() if p not in own}
    reset, not_reset = reset_lines(list(ctexts.values()))
    capture = _capture_facts(prog, logs, own, [f for f in faults if f.source != "printk"
                                               and f.source not in own_names], state, capture_dump, errors)
    faults_by_dev, alias_notes = _faults_by_device(state, own_names)
    return DumpEvidence(prog, tree, state, dict(pci_devices(prog)[0]), capture,
                        capture_dump.prog if capture_dump is not None else None, texts, ctexts, checks, matches,
                        reset, not_reset, faults_by_dev, alias_notes, errors, warnings)


def _faults(prog: drgn.Program, texts: dict[str, str], errors: list[str]) -> tuple[list, list[str]]:
    """The faults of the dump's printk buffer and of every log given, parsed once, and
    their sources."""
    from dumpkit.iommu.faults import parse_log, parse_printk

    try:
        faults, sources = parse_printk(prog, "printk"), ["printk"]
    except (drgn.FaultError, LookupError, AttributeError) as e:
        faults, sources = [], []
        errors.append(f"printk buffer unreadable: {e}")
    for path, text in texts.items():
        faults.extend(parse_log(text, Path(path).name))
        sources.append(path)
    return faults, sources


def _capture_facts(prog: drgn.Program, logs: list, own: list[str], capture_faults: list, state, capture_dump,
                   errors: list[str]) -> CaptureFacts:
    """What the capture kernel's logs (``capture_faults``: their faults) and dump say for
    every endpoint alike."""
    have_iommu = bool(state.vendors)
    table_copies = [f for f in capture_faults if f.kind == "table-copy" and f.iommu in state.vendors]
    copied = None
    if capture_dump is not None:
        try:
            copied = copied_in_capture(capture_dump)
        except (drgn.FaultError, LookupError, AttributeError, ValueError) as e:
            errors.append(f"capture dump's IOMMU tables unreadable: {e}")
    # a capture log that ends early (its compressed data stops) hides the faults after that
    cut = ", ".join(Path(log.path).name for log in logs if log.path not in own
                    and any("ends early" in w or "is damaged" in w for w in log.warnings))
    return CaptureFacts(any(log.path not in own for log in logs), own, {f.reason for f in table_copies},
                        min((f.time for f in table_copies if f.time is not None), default=None), copied,
                        lost_records(capture_faults), cut, iommu_suppressed(capture_faults), have_iommu,
                        _crashkernel(prog), str(capture_dump.path) if capture_dump is not None else None)


def _faults_by_device(state, own_names: set[str]) -> tuple[dict[str, list], dict[str, str]]:
    """The capture kernel's DMA faults per device they were resolved to, and the notes of
    those that came in under an alias requester id."""
    faults_by_dev: dict[str, list] = {}
    alias_notes: dict[str, str] = {}
    for c in state.correlations:
        if c.fault.source == "printk" or c.fault.source in own_names:
            continue
        for d in c.devices:
            faults_by_dev.setdefault(d, []).append(c.fault)
            if c.note and "alias" in c.note:
                alias_notes[d] = c.note
    return faults_by_dev, alias_notes


def _crashkernel(prog: drgn.Program) -> tuple[int, int] | None:
    """The crashkernel reservation (start, end), None where the dump does not say."""
    try:
        return kexec.crash_resource(prog, "crashk_res")
    except (KeyError, LookupError, drgn.FaultError):
        return None

