"""What the device's DMA did to the capture kernel (JSON ``hit_capture_kernel``): "faulted"
and "wrote" only on evidence of it; copied tables with no fault leave it unknown unless
something shows the DMA overlapped the capture kernel's use of them."""

from __future__ import annotations

from pathlib import Path

from dumpkit.iommu.logbase import TABLES_TAKEN_OVER
from dumpkit.units import iec
from dumpkit.verdict.capture import CaptureFacts
from dumpkit.verdict.claim import Claim, ClaimSpec
from dumpkit.verdict.words import INFERRED, OBSERVED

__all__ = ["HIT_FAULTED", "HIT_NA", "HIT_NO_CAPTURE", "HIT_NO_FAULT", "HIT_OVERLAP_UNKNOWN", "HIT_STOPPED_FULL",
           "HIT_STOPPED_RESET", "HIT_WROTE", "HIT_WROTE_RESERVED", "SPEC", "judge"]

HIT_FAULTED = "faulted in the capture kernel"
HIT_WROTE = "kept writing through the copied tables while the capture kernel ran"
HIT_WROTE_RESERVED = "wrote into the capture kernel's memory (the crashkernel reservation)"
HIT_OVERLAP_UNKNOWN = "nothing shows whether it overlapped the capture kernel's use of the IOMMU"
HIT_STOPPED_FULL = "stopped before the capture kernel took over (ring full)"
HIT_STOPPED_RESET = "stopped before the capture kernel took over the IOMMU (port reset)"
HIT_NO_FAULT = "no fault from it in the capture kernel, which did not copy the crashed kernel's tables"
HIT_NA = "no DMA after the crash to reach the capture kernel"
HIT_NO_CAPTURE = "nothing of the capture kernel was given"
FEW_RECORDS = "the IOMMU keeps few fault records and the kernel rate-limits them: more may have occurred"


def judge(ev, d, claims: dict[str, Claim]) -> Claim:
    """From the capture kernel's faults, its dump (rings compared with the vmcore's) and
    log; its sources are the capture logs (and the capture dump where it was read)."""
    did, cap = claims["did_dma_after_crash"], ev.capture
    diff = None
    if ev.capture_prog is not None and d.pdev is not None and did.value is not False:
        diff = d.ring_diff(ev.prog, ev.capture_prog)
    hit = _claim(cap, d, claims["could_dma"], did, diff, ev.reset)
    hit.sources = list(ev.ctexts) + ([cap.capture_dump] if cap.copied is not None else [])
    return hit


def _claim(cap: CaptureFacts, d, could: Claim, did: Claim, diff, reset: dict) -> Claim:
    on_copy = bool(cap.copies & TABLES_TAKEN_OVER) or (cap.copied is not None and d.bdf in cap.copied)
    if did.value is False:
        return Claim(None, [], applicable=False, phrase=HIT_NA)
    shown = _shown(cap, d, diff, reset, on_copy)
    if shown is not None:
        return shown
    if not cap.have_iommu:
        return _without_iommu(cap, d.ring, did)
    if on_copy:
        return _on_copied_tables(cap, d.bdf, could, did, d.full, diff)
    return _no_fault(cap, did, d.full)


def _shown(cap: CaptureFacts, d, diff, reset: dict, on_copy: bool) -> Claim | None:
    """What a record shows directly: its faults, its rings changed while the capture kernel
    ran, or a port reset before the capture kernel took over the IOMMU; None: nothing."""
    if d.faults:
        return Claim(True, _fault_evidence(d.faults, cap.suppressed, d.full, d.alias)
                     + _owner_addresses(d.faults, d.dev.vfio), basis=OBSERVED, phrase=HIT_FAULTED, term="faulted")
    if diff is not None and diff.changed:
        where = ", ".join(f"{n} in its {label}" for label, n in diff.where.items())
        return Claim(True, [f"{diff.changed} bytes changed between the vmcore and the capture dump ({where}): "
                            "written while the capture kernel ran"], basis=OBSERVED,
                     phrase=HIT_WROTE if on_copy else "kept writing into the crashed kernel's memory while "
                                                      "the capture kernel ran", term="wrote")
    early = [p for p in d.ports if reset.get(p) is not None and cap.takeover is not None and reset[p] < cap.takeover]
    if early:
        return Claim(False, [f"secondary bus reset of {', '.join(early)} at {min(reset[p] for p in early):.3f} s, "
                             f"before the capture kernel's IOMMU setup at {cap.takeover:.3f} s (capture log), "
                             "and no fault from it"], basis=INFERRED, phrase=HIT_STOPPED_RESET)
    return None


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


def _without_iommu(cap: CaptureFacts, ring, did: Claim) -> Claim:
    """No IOMMU: no fault can show the DMA; only pages it wrote inside the crashkernel
    reservation can."""
    if did.value and ring and ring.phys_pages:
        inside = _landed(ring.phys_pages, cap.crashk)
        if inside:
            return Claim(True, [f"no IOMMU: {len(inside)} of the pages it wrote lie in the crashkernel "
                                "reservation"], basis=INFERRED, phrase=HIT_WROTE_RESERVED, term="wrote")
        return Claim(None, ["no IOMMU: its post-crash writes landed outside the crashkernel reservation; "
                            "later writes are not recorded"])
    return Claim(None, ["no IOMMU: no fault can show its DMA, and where it wrote is not recorded"])


def _landed(pages: list[int], crashk: tuple[int, int] | None) -> list[int]:
    if not crashk:
        return []
    lo, hi = crashk
    return [p for p in pages if lo <= p <= hi]


def _on_copied_tables(cap: CaptureFacts, bdf: str, could: Claim, did: Claim, full: bool, diff) -> Claim:
    """On copied tables its DMA leaves no fault: unknown unless it could not DMA at all."""
    if could.value is False:
        return Claim(False, ["on copied tables in the capture kernel, but it could not DMA at the crash"],
                     basis=INFERRED, phrase="its copied tables give it nothing to write")
    ev = [("its translation entry in the capture kernel is the crashed kernel's, copied (capture dump)"
           if cap.copied is not None and bdf in cap.copied else
           "the capture kernel reused the crashed kernel's tables in place, in that kernel's memory (per its log)"
           if "reused" in cap.copies else "the capture kernel copied the crashed kernel's tables (per its log)")
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
    return Claim(None, ev, phrase=HIT_OVERLAP_UNKNOWN)


def _no_fault(cap: CaptureFacts, did: Claim, full: bool) -> Claim:
    """Uncopied tables and no fault from it: "no", unless the log is missing, lost fault
    records, ends early or shows no IOMMU setup of the capture kernel."""
    if not cap.logs:
        if cap.own:
            return Claim(None, [f"the log given ({', '.join(Path(p).name for p in cap.own)}) is the crashed "
                                "kernel's own (a vmcore-dmesg): it holds nothing of the capture kernel"],
                         phrase=HIT_NO_CAPTURE)
        return Claim(None, ["no capture-kernel log or dump given"], phrase=HIT_NO_CAPTURE)
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
    return Claim(False, [ev], basis=INFERRED, phrase=HIT_STOPPED_FULL if full and did.value else HIT_NO_FAULT)


SPEC = ClaimSpec(
    name="hit_capture_kernel", header="capture", label="in the capture kernel", question="in the capture kernel",
    short="capture kernel", means="what its DMA did to the capture kernel",
    words=(("faulted", "the capture kernel's IOMMU logged faults from it"),
           ("wrote", "it kept writing through the copied tables while the capture kernel ran "
                     "(its rings changed after the vmcore was saved), or into the crashkernel "
                     "reservation"),
           ("no", "stopped before the capture kernel took over (ring full, port reset), or no "
                  "fault where uncopied tables would have faulted it"),
           ("unknown", "nothing shows whether it overlapped (e.g. the tables were copied, so "
                       "its DMA would leave no fault)"),
           ("n/a", "no DMA after the crash")),
    column="hit_capture_kernel", judge=judge)
