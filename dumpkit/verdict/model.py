"""What a verdict is: per endpoint its claims and the facts beside them
(:class:`EndpointVerdict`), and every endpoint of one dump with what they were judged from
(:class:`Verdicts`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dumpkit.verdict.claim import Claim

__all__ = ["EndpointVerdict", "Verdicts"]


@dataclass
class EndpointVerdict:
    """One endpoint's claims and the facts beside them. The claim fields are those of
    :data:`dumpkit.verdict.claims.CLAIMS`, by name and in that order (a test holds the two
    together): positional construction and attribute access stay plain."""

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
    # its DMA targets inside the crashkernel=,cma ranges the capture kernel boots on
    # ({"pages", "targets", "unknown"}); None when the dump has no such ranges
    capture_cma: dict | None = None

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
