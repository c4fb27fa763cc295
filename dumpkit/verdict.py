"""Per-endpoint verdict: could it DMA when the kernel died, did it keep writing after the
crash, did that DMA hit the capture kernel, and did a port reset stop it — each claim with
its evidence, or "unknown" with the reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import drgn

__all__ = ["Claim", "EndpointVerdict", "Verdicts", "judge", "RESET_LINE", "NOT_RESET_LINE"]

RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: secondary bus reset")
NOT_RESET_LINE = re.compile(r"pci (?P<port>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): kdump: not reset: (?P<why>.+)")
TIMESTAMP = re.compile(r"^\[ *(\d+\.\d+)\]")


@dataclass
class Claim:
    """True, False, or None for unknown; ``evidence`` says why either way."""

    value: bool | None
    evidence: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        word = {True: "yes", False: "no", None: "unknown"}[self.value]
        return f"{word}: {'; '.join(self.evidence)}" if self.evidence else word


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

    @property
    def summary(self) -> str:
        """A one-phrase verdict for tables and pictures."""
        if self.did_dma_after_crash.value:
            parts = ["DMA after crash"]
            if self.hit_capture_kernel.value:
                parts.append("hit capture kernel")
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

    def get(self, bdf: str) -> EndpointVerdict | None:
        return next((v for v in self.endpoints if v.bdf == bdf), None)


def _reset_lines(texts: list[str]) -> tuple[dict[str, float | None], dict[str, str]]:
    reset: dict[str, float | None] = {}
    not_reset: dict[str, str] = {}
    for text in texts:
        for line in text.splitlines():
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


def _copied_in_capture(capture_dump) -> set[str] | None:
    from dumpkit.dmar.tables import collect_context_entries
    from dumpkit.dmar.units import collect_units

    prog = capture_dump.prog
    entries = collect_context_entries(prog, collect_units(prog))
    return {e.bdf for e in entries if e.copied}


def judge(dump, capture_logs: list[str | Path] = (), capture_dump=None) -> Verdicts:
    """Judge every endpoint (non-bridge function) of a first-kernel dump.

    :param dump: the crashed kernel's :class:`dumpkit.Dump`
    :param capture_logs: the capture kernel's log(s): DMAR faults, reset lines
    :param capture_dump: optionally the capture kernel's own dump (copied tables)
    """
    from dumpkit.dmar.collect import collect_dmar
    from dumpkit.dmar.pagetable import lookup
    from dumpkit.rings import iommu_bypass, ring_evidence

    errors: list[str] = []
    texts = [Path(p).read_text(errors="replace") for p in capture_logs]
    state = collect_dmar(dump, capture_logs)
    errors += state.errors
    tree = dump.pci()
    mappings = {m.device: m for m in state.mappings}
    entries = {e.bdf: e for e in state.entries}
    have_iommu = bool(state.units)
    reset, not_reset = _reset_lines(texts)
    copied = None
    if capture_dump is not None:
        try:
            copied = _copied_in_capture(capture_dump)
        except (drgn.FaultError, LookupError, AttributeError) as e:
            errors.append(f"capture dump's VT-d tables unreadable: {e}")
    faults_by_dev: dict[str, list] = {}
    for c in state.correlations:
        if c.device and c.fault.source != "printk":
            faults_by_dev.setdefault(c.device, []).append(c.fault)
    pdevs = {}
    from drgn.helpers.linux.pci import for_each_pci_dev

    for pdev in for_each_pci_dev(dump.prog):
        pdevs[pdev.dev.kobj.name.string_().decode()] = pdev

    out = []
    for dev in tree:
        if not dev.is_endpoint:
            continue
        name = dev.device_name or dev.class_name or f"{dev.vendor:04x}:{dev.device:04x}"
        # could DMA at the crash: the PCI state, then the IOMMU's writable mappings
        could = Claim(dev.could_dma, [dev.could_dma_reason] if dev.could_dma_reason else [])
        m, e = mappings.get(dev.bdf), entries.get(dev.bdf)
        pdev = pdevs.get(dev.bdf)
        bypass, bypass_why = iommu_bypass(dump.prog, pdev) if pdev is not None else (False, "")
        if could.value and have_iommu:
            if bypass:
                could.evidence.append(bypass_why)
            elif bypass is None:
                # whether the IOMMU translates its DMA at all is unknown: so is what it could reach
                could = Claim(None, could.evidence + [f"whether its DMA goes through the IOMMU is unknown: "
                                                      f"{bypass_why}"])
            elif e is None:
                could = Claim(False, could.evidence + ["no present context entry: the IOMMU blocks its DMA"])
            elif e.translation == "pass-through":
                could.evidence.append("IOMMU pass-through: all memory reachable")
            elif m is not None and m.summary.get("writable_bytes"):
                could.evidence.append(f"{m.summary['writable_bytes']} bytes writable through the IOMMU "
                                      f"in {m.summary['ranges']} ranges")
            elif m is not None and not m.errors:
                could = Claim(False, could.evidence + ["no writable IOMMU mapping"])
        # did DMA after the crash: the rings in the crashed kernel's memory
        def translate(iova, _m=m, _bypass=bypass):
            if _bypass:
                return iova
            if _m is None or not _m.leaves:
                return None if have_iommu else iova
            hit = lookup(_m.leaves, iova)
            return hit[0] if hit else None

        ring = ring_evidence(dump.prog, pdev, translate) if pdev is not None else None
        completions = ring.unprocessed if ring else None
        if ring is None:
            did = Claim(None, ["device object not found"])
        elif ring.status == "decoded":
            busy = [q for q in ring.queues if q.unprocessed]
            if completions:
                did = Claim(True, [f"{completions} completions in {', '.join(q.name for q in busy)} the crashed "
                                   f"kernel never processed (posted at or after the crash)"])
                if ring.phys_pages:
                    did.evidence.append(f"landed in {len(ring.phys_pages)} physical pages")
            else:
                did = Claim(False, ["no evidence: every ring fully processed by the crashed kernel"])
        elif ring.status == "not set up":
            did = Claim(False, ["no evidence: " + ring.note])
        elif dev.could_dma is False and ring.status == "no ring decoder":
            did = Claim(False, ["no evidence: " + ring.note + ", and it could not DMA"])
        else:
            did = Claim(None, [ring.note or ring.status])
        # hit the capture kernel
        faults = faults_by_dev.get(dev.bdf, [])
        if faults:
            hit = Claim(True, [f"{len(faults)} IOMMU faults from it in the capture kernel's log"])
        elif copied is not None and dev.bdf in copied and could.value is not False:
            hit = Claim(True, ["still translating through the crashed kernel's copied tables in the capture kernel"])
        elif copied is not None and dev.bdf in copied:
            hit = Claim(False, ["on copied tables in the capture kernel, but it could not DMA at the crash"])
        elif texts or copied is not None:
            hit = Claim(False, ["no fault from it in the capture log"
                                + ("" if copied is None else " and not on copied tables")])
        else:
            hit = Claim(None, ["no capture-kernel log or dump given"])
        # stopped by reset
        ports = [a.bdf for a in tree.ancestors(dev.bdf) if a.bdf in reset]
        skipped = [f"{a.bdf}: {not_reset[a.bdf]}" for a in tree.ancestors(dev.bdf) if a.bdf in not_reset]
        if ports:
            t_reset = min((reset[p] for p in ports if reset[p] is not None), default=None)
            later = [f for f in faults if t_reset is not None and f.time is not None and f.time > t_reset]
            if later:
                stopped = Claim(False, [f"reset via {', '.join(ports)} but {len(later)} faults followed"])
            else:
                stopped = Claim(True, [f"secondary bus reset of {', '.join(ports)}"
                                       + (", nothing from it afterwards" if faults or texts else "")])
        elif skipped:
            stopped = Claim(False, ["port not reset: " + "; ".join(skipped)])
        elif texts:
            stopped = Claim(False, ["no reset line for its ports in the capture log"])
        else:
            stopped = Claim(None, ["no capture-kernel log given"])
        out.append(EndpointVerdict(dev.bdf, name, dev.driver, could, did, hit, stopped, completions,
                                   len(faults), ports, ring.phys_pages if ring else []))
    return Verdicts(out, [str(p) for p in capture_logs], str(capture_dump.path) if capture_dump else None,
                    sorted(reset), not_reset, errors)
