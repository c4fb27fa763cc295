"""Per-endpoint verdict: could it DMA when the kernel died, did it keep writing after the
crash, did that DMA hit the capture kernel, and did a port reset stop it — each claim with
its evidence, or "unknown" with the reason. Nothing here names an IOMMU vendor or a
driver: the IOMMU state comes from :mod:`dumpkit.iommu`, ring evidence from
:mod:`dumpkit.rings`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import drgn

from dumpkit import claim_words as W
from dumpkit.kernel import device_driver_name, kexec
from dumpkit.claim_words import INFERRED, OBSERVED, default_word
from dumpkit.errors import InputError
from dumpkit.iommu.backends import REPORTER
from dumpkit.units import iec

__all__ = ["Claim", "EndpointVerdict", "Verdicts", "CaptureMismatch", "judge", "RESET_LINE", "NOT_RESET_LINE"]

RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: secondary bus reset"
                        r"(?! failed)")
NOT_RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: not reset: (?P<why>.+)")
TIMESTAMP = re.compile(r"^\[ *(\d+\.\d+)\]")
# PCI base classes whose functions firmware commonly leaves mastering (legacy USB
# emulation, boot storage, the boot framebuffer)
FIRMWARE_AGENTS = {0x0C03: "a USB controller", 0x01: "a storage controller", 0x03: "a display controller"}
FEW_RECORDS = "the IOMMU keeps few fault records and the kernel rate-limits them: more may have occurred"


class CaptureMismatch(InputError):
    """A capture log or capture dump that belongs to another crash."""


@dataclass
class Claim:
    """True, False, or None for unknown; ``evidence`` says why either way. A claim that
    does not apply (a reset cannot stop DMA that did not happen) has ``applicable`` False.
    ``sources`` names what the claim was read from (kernel objects with their addresses,
    IOMMU tables with their physical pages, capture logs), so a damaged one can be named.
    ``basis`` is "observed" or "inferred" for a claim that is known (None: unknown or n/a);
    ``phrase`` says it in words (:mod:`dumpkit.claim_words`); ``term`` is its top-line word
    where the default (yes / yes, inferred / no / unknown / n/a) would say more than the
    evidence ("no evidence") or less ("faulted")."""

    value: bool | None
    evidence: list[str] = field(default_factory=list)
    applicable: bool = True
    sources: list[str] = field(default_factory=list)
    basis: str | None = None
    phrase: str = ""
    term: str | None = None

    @property
    def word(self) -> str:
        """The claim's top-line word (see :data:`dumpkit.claim_words.LEGEND`)."""
        if self.term is not None and self.applicable:
            return self.term
        return default_word(self.value, self.applicable, self.basis)

    def __str__(self) -> str:
        said = ([self.phrase] if self.phrase else []) + self.evidence
        return f"{self.word}: {'; '.join(said)}" if said else self.word


@dataclass
class EndpointVerdict:
    bdf: str
    name: str
    driver: str | None
    could_dma: Claim
    did_dma_after_crash: Claim
    hit_capture_kernel: Claim
    stopped_by_reset: Claim
    post_crash_completions: int | None = None
    faults: int = 0
    reset_ports: list[str] = field(default_factory=list)
    landed_pages: list[int] = field(default_factory=list)
    vendor: int | None = None
    device: int | None = None
    decoder: str | None = None
    unreadable: str | None = None       # why the dump lost this function's struct pci_dev
    ring_status: str | None = None      # how its rings were read (RingEvidence.status): "error" = unreadable
    # per ring: name, size, completed (never processed), device_free, state (full / partly
    # processed / empty / None when the decoder cannot tell)
    rings: list[dict] = field(default_factory=list)
    # who drives its DMA when a VM or userspace driver owns it through VFIO ("vfio-pci:
    # userspace (pid 301 vfio-rx)"); None for a kernel driver
    dma_owner: str | None = None

    @property
    def says(self) -> str:
        """The endpoint's claims as one sentence of their phrases (the applicable ones that
        say something), for bottom lines and reports."""
        did, hit, stopped = self.did_dma_after_crash, self.hit_capture_kernel, self.stopped_by_reset
        parts = [did.phrase if did.value is not None and did.phrase else "whether it did DMA after the crash is "
                 "unknown" if did.value is None else ""]
        if hit.applicable and hit.phrase:
            parts.append(hit.phrase if hit.value is not None else f"in the capture kernel: {hit.phrase}")
        if stopped.applicable and stopped.value is not None and stopped.phrase:
            parts.append(stopped.phrase)
        return "; ".join(p for p in parts if p)

    @property
    def rings_full(self) -> bool:
        """Every ring decoded is full: the device ran out of entries and stopped by itself."""
        return bool(self.rings) and all(r["state"] == "full" for r in self.rings)

    @property
    def summary(self) -> str:
        """A one-phrase verdict for tables and pictures; "unknown" wherever a claim that
        decides it is unknown (pictures must not reassure)."""
        if self.did_dma_after_crash.value:
            parts = ["DMA after crash"]
            if self.hit_capture_kernel.value:
                parts.append("hit capture kernel")
            elif self.hit_capture_kernel.value is None:
                parts.append("hit unknown")
            if self.stopped_by_reset.value:
                parts.append("stopped by reset")
            return ", ".join(parts)
        if self.could_dma.value is False:
            return "could not DMA"
        if self.could_dma.value and self.did_dma_after_crash.value is False:
            return "could DMA, no evidence after crash"
        return "unknown"


@dataclass
class Verdicts:
    """Verdicts for every endpoint of one dump, and what they were judged from."""

    endpoints: list[EndpointVerdict]
    capture_logs: list[str]
    capture_dump: str | None
    ports_reset: list[str]
    ports_not_reset: dict[str, str]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    iommu: str | None = None
    capture_checks: dict[str, str] = field(default_factory=dict)
    # per capture log: how it was matched to this crash ({"status", "reasons", "facts"})
    capture_matches: dict[str, dict] = field(default_factory=dict)
    # which dump was judged: path, kernel release, build-id, format
    dump: dict = field(default_factory=dict)
    # logs given that are the crashed kernel's own (vmcore-dmesg): nothing of the capture kernel
    own_logs: list[str] = field(default_factory=list)

    def get(self, bdf: str) -> EndpointVerdict | None:
        return next((v for v in self.endpoints if v.bdf == bdf), None)


def _reset_lines(texts: list[str]) -> tuple[dict[str, float | None], dict[str, str]]:
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


def _read_logs(capture_logs) -> list:
    """Each capture log read once (a pipe or FIFO works, compressed logs are decompressed):
    :class:`dumpkit.logs.LogText` objects pass through, paths are read."""
    from dumpkit.logs import log_text

    return [log_text(p, what="capture log") for p in capture_logs]


def _copied_in_capture(capture_dump) -> set[str] | None:
    from dumpkit.iommu.collect import collect_iommu

    state = collect_iommu(capture_dump)
    return {e.bdf for e in state.entries if e.copied}


def _iommu_suppressed(faults: list) -> int:
    """Messages of IOMMU fault reporters (dmar_fault, amd_iommu_report_page_fault,
    arm_smmu_*…) the kernel's rate limit dropped; other functions' notices do not count."""
    return sum(f.detail.get("suppressed", 0) for f in faults if f.kind == "callbacks-suppressed"
               and REPORTER.search(f.detail.get("function", "")))


def _lost_records(faults: list) -> str:
    """What the capture log says of fault records it did not print: rate-limited messages
    of the IOMMU's fault reporter and fault-recording overflow (VT-d FSTS.PFO). Empty if none."""
    parts = []
    suppressed = _iommu_suppressed(faults)
    if suppressed:
        parts.append(f"{suppressed} suppressed messages")
    if any("PFO" in f.detail.get("bits", ()) for f in faults if f.kind == "fault-status"):
        parts.append("fault-record overflow")
    return ", ".join(parts)


def _landed(pages: list[int], crashk: tuple[int, int] | None) -> list[int]:
    if not crashk:
        return []
    lo, hi = crashk
    return [p for p in pages if lo <= p <= hi]


def _crashkernel(prog: drgn.Program) -> tuple[int, int] | None:
    try:
        return kexec.crash_resource(prog, "crashk_res")
    except (KeyError, LookupError, drgn.FaultError):
        return None


def _could_dma(dev, entry, mapping, bypass: bool | None, bypass_why: str, have_iommu: bool) -> Claim:
    """The PCI state (driver, enable, Bus Master up to the root, power), then what the
    IOMMU lets the device reach."""
    claim = _could_dma_claim(dev, entry, mapping, bypass, bypass_why, have_iommu)
    if claim.value is not None:
        # read from the kernel's state and the IOMMU's tables; a VFIO owner's Bus Master
        # is not in the kernel's state at all
        claim.basis = INFERRED if dev.vfio is not None and claim.value else OBSERVED
    if dev.vfio is not None:
        claim.evidence += _vfio_evidence(dev.vfio, mapping)
        claim.sources += dev.vfio.sources
    if dev.pdev_address is not None:
        claim.sources.append(f"struct pci_dev {dev.bdf} @{dev.pdev_address:#x}")
    if have_iommu and not bypass:
        claim.sources += (entry.sources if entry is not None else []) + (mapping.sources if mapping else [])
    return claim


def _vfio_evidence(owner, mapping) -> list[str]:
    """The owner's DMA mappings and whether the IOMMU's tables agree with them."""
    from dumpkit.vfio.check import compare_with_walk

    if "mappings" in owner.unknown or "vfio" in owner.unknown:
        return [f"its owner's DMA mappings are unknown: {owner.unknown.get('mappings') or owner.unknown['vfio']}"]
    if not owner.mappings:
        return [f"its VFIO container ({owner.container or 'none attached'}) holds no DMA mapping"]
    n = len(owner.mappings)
    ev = [f"{owner.owner_text} mapped {iec(owner.writable_bytes)} writable for it in {n} VFIO mapping"
          f"{'s' if n != 1 else ''} ({owner.container})"]
    if mapping is not None and not mapping.errors:
        ev.append(compare_with_walk(owner, mapping.ranges).text())
    return ev


def _could_dma_claim(dev, entry, mapping, bypass: bool | None, bypass_why: str, have_iommu: bool) -> Claim:
    if "driver" in dev.unknown:
        claim = Claim(None, [f"whether a driver is bound is unknown: {dev.unknown['driver']}"])
    elif dev.driver is None:
        ev = ["no driver bound; the kernel's Bus Master flag is software state and firmware may have left "
              "the device mastering"]
        agent = FIRMWARE_AGENTS.get(dev.class_code >> 8) or FIRMWARE_AGENTS.get(dev.class_code >> 16)
        if agent:
            ev.append(f"{agent}: firmware commonly keeps these doing DMA")
        claim = Claim(None, ev)
    else:
        claim = Claim(dev.could_dma, [dev.could_dma_reason] if dev.could_dma_reason else [])
    if not have_iommu:
        if claim.value is not False:
            claim.evidence.append("no IOMMU in use: its DMA reaches all memory")
        return claim
    if bypass:
        claim.evidence.append(bypass_why)
        return claim
    if bypass is None:
        if claim.value is not False:
            claim.value = None
        claim.evidence.append(f"whether its DMA goes through the IOMMU is unknown: {bypass_why}")
        return claim
    if entry is None:
        claim.evidence.append("no IOMMU unit translates it: its DMA reaches memory untranslated")
        return claim
    reason = entry.detail.get("reason")
    if entry.translation == "unknown":
        if claim.value is not False:
            claim.value = None
        claim.evidence.append(f"what the IOMMU allowed it is unknown: {reason or '; '.join(entry.errors)}")
    elif entry.translation == "blocked":
        claim.value = False
        claim.evidence.append(reason or "the IOMMU blocks its DMA")
    elif entry.translation in ("pass-through", "untranslated"):
        claim.evidence.append(f"IOMMU {entry.translation}: all memory reachable"
                              + (f" ({reason})" if reason else ""))
    elif mapping is not None and mapping.summary.get("writable_bytes"):
        least = "at least " if mapping.errors else ""
        claim.evidence.append(f"{least}{iec(mapping.summary['writable_bytes'])} writable through the IOMMU in "
                              f"{mapping.summary['ranges']} range{'s' if mapping.summary['ranges'] != 1 else ''}")
        if mapping.errors:
            claim.evidence.append(f"some of its IOMMU page tables are unreadable or damaged: {mapping.errors[0]}")
    elif mapping is not None and mapping.errors:
        if claim.value is not False:
            claim.value = None
        claim.evidence.append(f"its IOMMU page tables are unreadable or damaged: {mapping.errors[0]}")
    elif mapping is not None:
        claim.value = False
        claim.evidence.append("no writable IOMMU mapping: any DMA it issues is blocked")
    return claim


def judge(dump, capture_logs=(), capture_dump=None, force: bool = False) -> Verdicts:
    """Judge every endpoint (non-bridge function) of a first-kernel dump.

    :param dump: the crashed kernel's :class:`dumpkit.Dump`
    :param capture_logs: the capture kernel's log(s) (or a vmcore-dmesg): IOMMU faults,
        table copies, reset lines. Each is checked against the dump first. Paths (files,
        FIFOs, compressed logs: each read once) or :class:`dumpkit.logs.LogText` already read.
    :param capture_dump: optionally the capture kernel's own dump (copied tables)
    :param force: use capture evidence that does not match this crash (with a warning)
    :raises CaptureMismatch: a capture log from another crash, unless ``force``
    """
    ev = _gather(dump, capture_logs, capture_dump, force)
    out = [_judge_endpoint(ev, dev) for dev in ev.tree if dev.is_endpoint]
    out += _unreadable_endpoints(ev.prog, ev.tree, ev.pdevs)
    info = dump.info
    ident = {"path": str(dump.path) if dump.path else dump.source, "kernel_release": info.kernel_release,
             "build_id": info.build_id, "format": info.format}
    return Verdicts(out, list(ev.texts), str(capture_dump.path) if capture_dump else None,
                    sorted(ev.reset), ev.not_reset, ev.errors, ev.warnings, ev.state.vendor, ev.checks,
                    ev.matches, ident, ev.capture.own)


@dataclass
class _Evidence:
    """Everything a dump and its capture evidence say, gathered once; each endpoint's
    claims are read from it (:func:`_judge_endpoint`)."""

    prog: drgn.Program
    tree: object
    state: object                   # dumpkit.iommu.model.IommuState
    pdevs: dict
    capture: "_CaptureFacts"
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


def _check_logs(prog: drgn.Program, texts: dict[str, str], force: bool, warnings: list[str]):
    """Each capture log against this crash: (status by path, match record by path)."""
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


def _gather(dump, capture_logs, capture_dump, force: bool) -> _Evidence:
    """Logs (checked against the crash), faults, IOMMU state, PCI tree and the capture
    kernel's facts, once per dump."""
    from dumpkit.iommu.faults import parse_log, parse_printk
    from dumpkit.iommu.collect import collect_iommu
    from dumpkit.target.walk import pci_devices

    errors: list[str] = []
    warnings: list[str] = []
    prog = dump.prog
    if dump.kdump().capture_kernel:
        warnings.append("this dump is of a capture (kdump) kernel, not of the crashed kernel: the claims below "
                        "are about the capture kernel's own devices; judge the crashed kernel's vmcore and pass "
                        "this one as --capture-dump")
    logs = _read_logs(capture_logs)
    texts = {log.path: log.text for log in logs}
    warnings += [w for log in logs for w in log.warnings]
    checks, matches = _check_logs(prog, texts, force, warnings)
    try:
        faults, sources = parse_printk(prog, "printk"), ["printk"]
    except (drgn.FaultError, LookupError, AttributeError) as e:
        faults, sources = [], []
        errors.append(f"printk buffer unreadable: {e}")
    for path, text in texts.items():
        faults.extend(parse_log(text, Path(path).name))
        sources.append(path)
    state = collect_iommu(dump, faults=faults, log_sources=sources)
    errors += state.errors
    tree = dump.pci()
    errors += list(getattr(tree, "errors", []) or [])
    have_iommu = bool(state.vendors)
    # a log that is the crashed kernel's own (vmcore-dmesg) holds nothing of the capture kernel
    own = [p for p, mt in matches.items() if "printk_tail" in mt["facts"] and "elfcorehdr" not in mt["facts"]]
    own_names = {Path(p).name for p in own}
    ctexts = {p: t for p, t in texts.items() if p not in own}
    reset, not_reset = _reset_lines(list(ctexts.values()))
    capture_faults = [f for f in faults if f.source != "printk" and f.source not in own_names]
    table_copies = [f for f in capture_faults if f.kind == "table-copy" and f.iommu in state.vendors]
    copied = None
    if capture_dump is not None:
        try:
            copied = _copied_in_capture(capture_dump)
        except (drgn.FaultError, LookupError, AttributeError, ValueError) as e:
            errors.append(f"capture dump's IOMMU tables unreadable: {e}")
    # a capture log that ends early (its compressed data stops) hides the faults after that
    cut = ", ".join(Path(log.path).name for log in logs if log.path not in own
                    and any("ends early" in w or "is damaged" in w for w in log.warnings))
    capture = _CaptureFacts(bool(ctexts), own, {f.reason for f in table_copies},
                            min((f.time for f in table_copies if f.time is not None), default=None), copied,
                            _lost_records(capture_faults), cut, _iommu_suppressed(capture_faults), have_iommu,
                            _crashkernel(prog), str(capture_dump.path) if capture_dump is not None else None)
    faults_by_dev, alias_notes = _faults_by_device(state, own_names)
    return _Evidence(prog, tree, state, dict(pci_devices(prog)[0]), capture,
                     capture_dump.prog if capture_dump is not None else None, texts, ctexts, checks, matches,
                     reset, not_reset, faults_by_dev, alias_notes, errors, warnings)


def _judge_endpoint(ev: _Evidence, dev) -> EndpointVerdict:
    """One endpoint's four claims from the evidence; its rings decoded once."""
    from dumpkit.rings import iommu_bypass, ring_evidence

    prog, cap, tree = ev.prog, ev.capture, ev.tree
    name = dev.device_name or dev.class_name or f"{dev.vendor:04x}:{dev.device:04x}"
    entry, m = ev.state.entry(dev.bdf), ev.state.mapping(dev.bdf)
    pdev = ev.pdevs.get(dev.bdf)
    bypass, bypass_why = iommu_bypass(prog, pdev) if pdev is not None else (False, "")
    could = _could_dma(dev, entry, m, bypass, bypass_why, cap.have_iommu)
    untranslated = (not cap.have_iommu or bypass or entry is None
                    or (entry and entry.translation in ("pass-through", "untranslated")))

    def translate(iova):
        if untranslated:
            return iova
        hit = state_lookup(m, iova)
        return hit[0] if hit else None

    ring = ring_evidence(prog, pdev, translate) if pdev is not None else None
    rings = _ring_records(ring)
    did = _did_claim(prog, dev, pdev, ring, could, entry, m)
    if ring is not None:
        did.sources += list(ring.sources) + (m.sources if m is not None and not untranslated and
                                            ring.status == "decoded" and ring.queues else [])
    faults = ev.faults_by_dev.get(dev.bdf, [])
    could, did = _consistent(could, did, faults, list(ev.ctexts))
    diff = None
    if ev.capture_prog is not None and pdev is not None and did.value is not False:
        diff = _ring_diff(prog, ev.capture_prog, pdev, translate)
    full = bool(rings) and all(r["state"] == "full" for r in rings)
    ports = [a.bdf for a in tree.ancestors(dev.bdf) if a.bdf in ev.reset]
    hit = _capture_claim(cap, dev.bdf, could, did, faults, ev.alias_notes.get(dev.bdf), ring, full, diff, ev.reset,
                         ports, dev.vfio)
    stopped = _stopped_claim(cap, tree, dev.bdf, did, faults, ev.reset, ev.not_reset, full)
    hit.sources = list(ev.ctexts) + ([cap.capture_dump] if cap.copied is not None else [])
    stopped.sources = list(ev.ctexts)
    return EndpointVerdict(dev.bdf, name, dev.driver, could, did, hit, stopped, ring.unprocessed if ring else None,
                           len(faults), ports, ring.phys_pages if ring else [], dev.vendor, dev.device,
                           ring.decoder if ring else None, ring_status=ring.status if ring else None,
                           rings=rings, dma_owner=f"{dev.vfio.driver}: {dev.vfio.owner_text}"
                           if dev.vfio is not None else None)


@dataclass
class _CaptureFacts:
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


def _did_claim(prog: drgn.Program, dev, pdev, ring, could: Claim, entry, m) -> Claim:
    """Did the device do DMA after the crash, from its rings (faults are added by
    :func:`_consistent`)."""
    completions = ring.unprocessed if ring else None
    if ring is None:
        return Claim(None, ["device object not found"])
    if ring.status == "decoded":
        busy = [q for q in ring.queues if q.unprocessed]
        if completions:
            full = bool(ring.queues) and all(q.state == "full" for q in ring.queues)
            did = Claim(True, [f"{completions} completions in {', '.join(q.name for q in busy)} that the "
                               "crashed kernel never processed: observed in its memory; that the device "
                               "posted them at or after the crash is inferred (the kernel processes "
                               "completions as they come)"], basis=INFERRED,
                        phrase=W.DID_COMPLETIONS_FULL if full else W.DID_COMPLETIONS)
            did.evidence += _landed_evidence(ring, entry, m) + _ring_states(ring.queues)
            return did
        return Claim(False, ["every ring fully processed by the crashed kernel"] + _ring_states(ring.queues),
                     basis=INFERRED, phrase=W.DID_NO_EVIDENCE, term="no evidence")
    if ring.status == "not set up":
        return Claim(False, [ring.note], basis=INFERRED, phrase=W.DID_NO_EVIDENCE, term="no evidence")
    if could.value is False and ring.status == "no ring decoder":
        return Claim(False, [ring.note], basis=INFERRED, phrase=W.DID_COULD_NOT)
    if dev.vfio is not None and could.value is not False:
        return Claim(None, _vfio_rings(prog, dev.vfio, m))
    if ring.status == "no ring decoder" and dev.driver is not None and pdev is not None:
        # what memory shows of a driver no decoder knows
        from dumpkit.rings.generic import generic_evidence

        writable = [r.size for r in m.ranges if r.write] if m is not None else None
        try:
            shown = generic_evidence(prog, pdev, writable)
        except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
            shown = f"driver state unreadable ({e})"
        return Claim(None, [ring.note, shown])
    did = Claim(None, [ring.note or ring.status])
    if could.value is None and ring.status == "no ring decoder" and any("unreadable" in x for x in could.evidence):
        # "no evidence" would follow from "could not DMA", which the lost page hides
        did.evidence.append("whether it could DMA is unknown: " + could.evidence[-1])
        did.sources += could.sources
    return did


def _vfio_rings(prog: drgn.Program, owner, m) -> list[str]:
    """Why a VFIO-owned function's DMA after the crash is unknown: its rings are in its
    owner's memory, in the owner's format; whether the dump kept those pages."""
    from dumpkit.target.pagemap import page_presence

    ev = [f"its rings are in the memory of {owner.owner_text}, in a format of the owner's choosing: the "
          "kernel holds no record of them"]
    phys = next((r.phys for r in (m.ranges if m is not None else []) if r.write), None)
    if phys is None:
        return ev
    status, level = page_presence(prog, phys)
    if status == "excluded":
        # user pages are left out by design at the usual levels (-d 31 has bit 8)
        by = f"dump level {level} leaves out user pages" if level is not None and level & 8 else \
            f"the dump level{f' ({level})' if level is not None else ''} excluded it"
        ev.append(f"its owner's pages are not in this dump (page {phys & ~0xFFF:#x}: {by}; a dump written with "
                  "makedumpfile -d 23 or lower keeps them)")
    elif status == "present":
        ev.append("its owner's pages are in this dump, but no decoder reads a userspace driver's rings")
    else:
        ev.append(f"whether its owner's pages are in this dump is unknown (the dump file does not say for page "
                  f"{phys & ~0xFFF:#x})")
    return ev


def _ring_records(ring) -> list[dict]:
    """Each decoded ring's state as data (JSON, frames): name, size, completed entries the
    kernel never processed, entries still handed to the device, state."""
    if ring is None or ring.status != "decoded":
        return []
    return [{"name": q.name, "size": q.size, "completed": q.unprocessed, "device_free": q.device_free,
             "state": q.state} for q in ring.queues]


def _ring_diff(prog: drgn.Program, later: drgn.Program, pdev, translate):
    """The device's rings compared between the vmcore and the capture dump (None: no
    decoder names its buffers)."""
    from dumpkit.overlap import compare_buffers
    from dumpkit.rings import dma_buffers

    try:
        buffers = dma_buffers(prog, pdev)
    except (drgn.FaultError, LookupError, ValueError, AttributeError):
        return None
    return compare_buffers(prog, later, buffers, translate) if buffers else None


def _fault_evidence(faults: list, suppressed: int, full: bool, alias: str | None) -> list[str]:
    """What the capture kernel's fault records from the device say, and what they may
    leave out: a full ring says the device stopped by itself (no more to come), else the
    IOMMU keeps few records and the kernel rate-limits them."""
    ev = [f"{len(faults)} IOMMU fault(s) from it logged by the capture kernel"
          + (f" (+{suppressed} suppressed messages)" if suppressed else "")
          + ("; its ring is full: the device stopped writing by itself" if full else f"; {FEW_RECORDS}")]
    return ev + ([alias] if alias else [])


def _owner_addresses(faults: list, vfio) -> list[str]:
    """The faulting addresses of a VFIO-owned device in its owner's terms (its IOVAs are
    the owner's: the capture kernel keeps translating through the old context entry)."""
    if vfio is None:
        return []
    addrs = sorted({f.address for f in faults if f.address is not None})
    said = [t for t in (vfio.describe_iova(a) for a in addrs[:3]) if t]
    outside = sum(1 for a in addrs if vfio.mapping_at(a) is None)
    if outside:
        said.append(f"{outside} faulting address(es) lie in no VFIO mapping of its owner")
    return said


def _capture_claim(cap: _CaptureFacts, bdf: str, could: Claim, did: Claim, faults: list, alias: str | None,
                   ring, full: bool, diff, reset: dict, ports: list[str], vfio=None) -> Claim:
    """What the device's DMA did to the capture kernel (JSON ``hit_capture_kernel``):
    "faulted" and "wrote" only on evidence of it; copied tables with no fault leave it
    unknown unless something shows the DMA overlapped the capture kernel's use of them."""
    on_copy = "copied" in cap.copies or (cap.copied is not None and bdf in cap.copied)
    if did.value is False:
        return Claim(None, [], applicable=False, phrase=W.HIT_NA)
    if faults:
        return Claim(True, _fault_evidence(faults, cap.suppressed, full, alias) + _owner_addresses(faults, vfio),
                     basis=OBSERVED, phrase=W.HIT_FAULTED, term="faulted")
    if diff is not None and diff.changed:
        where = ", ".join(f"{n} in its {label}" for label, n in diff.where.items())
        return Claim(True, [f"{diff.changed} bytes changed between the vmcore and the capture dump ({where}): "
                            "written while the capture kernel ran"], basis=OBSERVED,
                     phrase=W.HIT_WROTE if on_copy else "kept writing into the crashed kernel's memory while "
                                                        "the capture kernel ran", term="wrote")
    early = [p for p in ports if reset.get(p) is not None and cap.takeover is not None and reset[p] < cap.takeover]
    if early:
        return Claim(False, [f"secondary bus reset of {', '.join(early)} at {min(reset[p] for p in early):.3f} s, "
                             f"before the capture kernel's IOMMU setup at {cap.takeover:.3f} s (capture log), "
                             "and no fault from it"], basis=INFERRED, phrase=W.HIT_STOPPED_RESET)
    if not cap.have_iommu:
        if did.value and ring and ring.phys_pages:
            inside = _landed(ring.phys_pages, cap.crashk)
            if inside:
                return Claim(True, [f"no IOMMU: {len(inside)} of the pages it wrote lie in the crashkernel "
                                    "reservation"], basis=INFERRED, phrase=W.HIT_WROTE_RESERVED, term="wrote")
            return Claim(None, ["no IOMMU: its post-crash writes landed outside the crashkernel reservation; "
                                "later writes are not recorded"])
        return Claim(None, ["no IOMMU: no fault can show its DMA, and where it wrote is not recorded"])
    if on_copy and could.value is False:
        return Claim(False, ["on copied tables in the capture kernel, but it could not DMA at the crash"],
                     basis=INFERRED, phrase="its copied tables give it nothing to write")
    if on_copy:
        ev = [("its translation entry in the capture kernel is the crashed kernel's, copied (capture dump)"
               if cap.copied is not None and bdf in cap.copied else
               "the capture kernel copied the crashed kernel's tables (per its log)")
              + ": DMA it did while the capture kernel ran went through them and left no fault"]
        if did.value is None:
            ev.append("whether it did DMA after the crash is unknown")
        elif full:
            ev.append("its ring is full: it stopped writing by itself, at a time the dump does not record")
        else:
            ev.append("nothing in the dump records when its completions came")
        if diff is not None and diff.compared:
            ev.append(f"its rings ({iec(diff.compared)}) are unchanged between the vmcore and the capture dump: "
                      "nothing written after the vmcore was saved")
        return Claim(None, ev, phrase=W.HIT_OVERLAP_UNKNOWN)
    if not cap.logs:
        if cap.own:
            return Claim(None, [f"the log given ({', '.join(Path(p).name for p in cap.own)}) is the crashed "
                                "kernel's own (a vmcore-dmesg): it holds nothing of the capture kernel"],
                         phrase=W.HIT_NO_CAPTURE)
        return Claim(None, ["no capture-kernel log or dump given"], phrase=W.HIT_NO_CAPTURE)
    ev = "no fault from it in the capture log" + ("" if cap.copied is None else " and not on copied tables")
    if cap.lost or cap.cut:
        # the records that were logged may all be other devices'
        why = (f"the capture kernel lost fault records ({cap.lost})" if cap.lost else
               f"the capture log ends early ({cap.cut}): records after that are not in it")
        return Claim(None, [ev + f", but {why}: its DMA after the crash may have faulted unlogged"])
    if not cap.copies:
        return Claim(None, [ev + ", but the log shows no IOMMU setup of the capture kernel: its DMA may have "
                                 "gone untranslated, leaving no fault"])
    if "failed" in cap.copies and did.value:
        ev += (" although the table copy failed: its ring is full, so the device had stopped by itself (why no "
               "fault came)" if full else f" although the table copy failed; {FEW_RECORDS}")
    return Claim(False, [ev], basis=INFERRED, phrase=W.HIT_STOPPED_FULL if full and did.value else W.HIT_NO_FAULT)


def _stopped_claim(cap: _CaptureFacts, tree, bdf: str, did: Claim, faults: list, reset: dict,
                   not_reset: dict, full: bool) -> Claim:
    """Did a port reset in the capture kernel stop its DMA: n/a without DMA to stop, "no"
    only where DMA after the crash is known."""
    ports = [a.bdf for a in tree.ancestors(bdf) if a.bdf in reset]
    skipped = [f"{a.bdf}: {not_reset[a.bdf]}" for a in tree.ancestors(bdf) if a.bdf in not_reset]
    if did.value is False:
        return Claim(None, [], applicable=False, phrase=W.STOPPED_NA)
    if ports:
        t_reset = min((reset[p] for p in ports if reset[p] is not None), default=None)
        later = [f for f in faults if t_reset is not None and f.time is not None and f.time > t_reset]
        if later:
            return Claim(False, [f"reset via {', '.join(ports)} but {len(later)} faults followed"], basis=OBSERVED,
                         phrase=W.STOPPED_NO)
        return Claim(True, [f"secondary bus reset of {', '.join(ports)}" + (", nothing from it afterwards"
                                                                          if faults or cap.logs else "")],
                     basis=OBSERVED, phrase=W.STOPPED_YES)
    no = W.STOPPED_NO_FULL if full else W.STOPPED_NO
    if skipped:
        return (Claim(False, ["port not reset: " + "; ".join(skipped)], basis=OBSERVED, phrase=no) if did.value
                else Claim(None, ["port not reset: " + "; ".join(skipped)]))
    if cap.logs:
        # "no" says DMA went on unstopped: only where DMA after the crash is known
        if did.value:
            return Claim(False, ["no reset line for its ports in the capture log"], basis=OBSERVED, phrase=no)
        return Claim(None, ["no reset line for its ports in the capture log",
                            "whether it did DMA after the crash is unknown"])
    if cap.own:
        return Claim(None, [f"the log given ({', '.join(Path(p).name for p in cap.own)}) is the crashed kernel's "
                            "own: it holds nothing of the capture kernel"])
    return Claim(None, ["no capture-kernel log given"])


def _ring_states(queues) -> list[str]:
    """Each ring's state as evidence: full (the device ran out of entries and stopped
    writing by itself: why a device can be quiet, and fault-free, in the capture kernel),
    partly processed (entries still handed to the device), empty (everything processed);
    the empty ones named together."""
    out, empty = [], []
    for q in queues:
        if q.state == "full":
            out.append(f"{q.name} is full ({q.unprocessed} of {q.size} completed, none left to the device): "
                       "the device stopped writing into it by itself")
        elif q.state == "partly processed":
            out.append(f"{q.name} is partly processed: {q.unprocessed} of {q.size} completed, {q.device_free} "
                       "still handed to the device")
        elif q.state == "empty":
            empty.append(q.name)
        else:
            out.append(f"{q.name}: {q.unprocessed} of {q.size} completed (how many the device still had is "
                       "not known)")
    if empty:
        out.append(f"empty (every completion processed): {', '.join(empty)}")
    return out


def _consistent(could: Claim, did: Claim, faults: list, logs: list[str]) -> tuple[Claim, Claim]:
    """Claims that follow from one another, made to agree: an IOMMU fault the capture
    kernel logged from the device is DMA it issued after the crash (observed), and a device
    that did DMA after the crash could do DMA. Evidence that says otherwise is kept in the
    claim it came from, marked as contradicted, never dropped."""
    if faults and did.value is not True:
        was = f"; its rings: {'; '.join(did.evidence)}" if did.evidence else ""
        did = Claim(True, [f"{len(faults)} IOMMU fault(s) from it logged by the capture kernel: DMA it issued "
                           f"after the crash (observed){was}"], sources=did.sources + logs, basis=OBSERVED,
                    phrase=W.DID_FAULTS)
    elif faults:
        # completions (inferred) and faults (observed): the faults settle it
        did = Claim(True, [f"{len(faults)} IOMMU fault(s) from it logged by the capture kernel: DMA it issued "
                           "after the crash (observed)"] + did.evidence, sources=did.sources + logs,
                    basis=OBSERVED, phrase=W.DID_FAULTS)
    if did.value is True and could.value is not True:
        how = "observed: IOMMU faults in the capture kernel" if faults else "inferred from its completions"
        said = f"; what the kernel's state said: {'; '.join(could.evidence)}" if could.evidence else ""
        if could.value is False and not faults:
            # inferred DMA against a definite "could not": neither wins
            could = Claim(None, [f"contradicting evidence: it did DMA after the crash ({how}){said}"],
                          sources=could.sources)
        else:
            could = Claim(True, [f"it did DMA after the crash ({how}){said}"], sources=could.sources + did.sources,
                          basis=OBSERVED if faults else INFERRED)
    return could, did


def _landed_evidence(ring, entry, mapping) -> list[str]:
    """Where the completions' buffers landed, and how many of them cannot be placed (their
    IOMMU tables unreadable): never a smaller count passed off as the whole."""
    out = []
    if ring.phys_pages:
        out.append(f"landed in {len(ring.phys_pages)} physical pages"
                   + (f" (the buffers of {ring.unresolved} completions not placed)" if ring.unresolved else ""))
    if entry is not None and entry.translation == "unknown":
        out.append(f"where they landed is unknown: the IOMMU tables are unreadable ({'; '.join(entry.errors)})")
    elif ring.unresolved and mapping is not None and mapping.errors:
        out.append(f"where {ring.unresolved} of them landed is unknown: its IOMMU page tables are unreadable "
                   f"({mapping.errors[0]})")
    elif ring.unresolved:
        out.append(f"the buffers of {ring.unresolved} of them are not mapped in its IOMMU page tables")
    return out


def _unreadable_endpoints(prog: drgn.Program, tree, pdevs: dict) -> list[EndpointVerdict]:
    """Functions on the kernel's device list that the PCI view could not read: every claim
    unknown, naming the object, rather than the function silently missing from the verdict."""
    from dumpkit.target.walk import describe_fault, unreadable_pci_devices

    lost: list[tuple[str, int, str, str | None]] = []
    for bdf, pdev in pdevs.items():
        if tree.get(bdf) is not None:
            continue
        addr, driver = pdev.value_(), None
        try:
            if pdev.subordinate or pdev.member_("class").value_() >> 8 == 0x0600:
                continue                # a bridge or the host bridge: not judged
            driver = device_driver_name(pdev.dev)
            try:
                pdev.bus.number.value_()
            except drgn.FaultError as e:
                lost.append((bdf, addr, describe_fault(prog, e, f"struct pci_bus @{pdev.bus.value_():#x} of {bdf}"),
                             driver))
                continue
            why = next((err for err in getattr(tree, "errors", []) if f"{addr:#x}" in err),
                       f"struct pci_dev {bdf} @{addr:#x} could not be read whole")
        except drgn.FaultError as e:
            why = describe_fault(prog, e, f"struct pci_dev {bdf} @{addr:#x} or what it points to")
        lost.append((bdf, addr, why, driver))
    for addr, why in unreadable_pci_devices(prog):
        lost.append((f"?@{addr:#x}", addr, why, None))
    out = []
    for bdf, addr, why, driver in lost:
        def unknown(addr=addr, why=why) -> Claim:
            return Claim(None, [why], sources=[f"struct pci_dev @{addr:#x}"])

        out.append(EndpointVerdict(bdf, "PCI function (struct pci_dev unreadable)", driver, unknown(), unknown(),
                                   unknown(), unknown(), unreadable=why))
    return out


def state_lookup(mapping, iova: int):
    """A device's DMA address through its walked page tables (None: not mapped)."""
    from dumpkit.iommu.model import lookup

    if mapping is None or not mapping.leaves:
        return None
    return lookup(mapping.leaves, iova)
