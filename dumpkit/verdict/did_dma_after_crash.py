"""Did the device keep doing DMA after the crash: completions in its rings that the crashed
kernel never processed (inferred), IOMMU faults the capture kernel logged from it
(observed). What it did settles whether it could (:func:`consistent`)."""

from __future__ import annotations

import drgn

from dumpkit.verdict.claim import Claim, ClaimSpec
from dumpkit.verdict.words import INFERRED, OBSERVED

__all__ = ["DID_COMPLETIONS", "DID_COMPLETIONS_FULL", "DID_COULD_NOT", "DID_FAULTS", "DID_NO_EVIDENCE", "SPEC",
           "consistent", "judge"]

DID_FAULTS = "did DMA after the crash: the capture kernel logged IOMMU faults from it"
DID_COMPLETIONS = "did DMA after the crash (inferred from completions the crashed kernel never processed)"
DID_COMPLETIONS_FULL = ("did DMA after the crash until its ring was full, then stopped by itself (inferred from "
                        "completions the crashed kernel never processed)")
DID_NO_EVIDENCE = "no evidence of DMA after the crash"
DID_COULD_NOT = "no DMA after the crash: it could not DMA"


def judge(ev, d, claims: dict[str, Claim]) -> Claim:
    """From its rings, then its faults; the could-DMA claim made to agree with it."""
    ring, m = d.ring, d.mapping
    did = _from_rings(ev.prog, d, claims["could_dma"])
    if ring is not None:
        did.sources += list(ring.sources) + (m.sources if m is not None and not d.untranslated and
                                            ring.status == "decoded" and ring.queues else [])
    claims["could_dma"], did = consistent(claims["could_dma"], did, d.faults, list(ev.ctexts))
    return did


def _from_rings(prog: drgn.Program, d, could: Claim) -> Claim:
    """Did the device do DMA after the crash, from its rings (faults are added by
    :func:`consistent`)."""
    dev, pdev, ring, m = d.dev, d.pdev, d.ring, d.mapping
    if ring is None:
        return Claim(None, ["device object not found"])
    if ring.status == "decoded":
        return _from_decoded(ring, d)
    if ring.status == "not set up":
        return Claim(False, [ring.note], basis=INFERRED, phrase=DID_NO_EVIDENCE, term="no evidence")
    if could.value is False and ring.status == "no ring decoder":
        return Claim(False, [ring.note], basis=INFERRED, phrase=DID_COULD_NOT)
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


def _from_decoded(ring, d) -> Claim:
    """Completions the crashed kernel never processed are DMA after the crash (inferred);
    none left is no evidence of it."""
    completions = ring.unprocessed
    if completions:
        busy = [q for q in ring.queues if q.unprocessed]
        full = bool(ring.queues) and all(q.state == "full" for q in ring.queues)
        did = Claim(True, [f"{completions} completions in {', '.join(q.name for q in busy)} that the "
                           "crashed kernel never processed: observed in its memory; that the device "
                           "posted them at or after the crash is inferred (the kernel processes "
                           "completions as they come)"], basis=INFERRED,
                    phrase=DID_COMPLETIONS_FULL if full else DID_COMPLETIONS)
        did.evidence += _landed_evidence(ring, d.entry, d.mapping) + _ring_states(ring.queues)
        return did
    return Claim(False, ["every ring fully processed by the crashed kernel"] + _ring_states(ring.queues),
                 basis=INFERRED, phrase=DID_NO_EVIDENCE, term="no evidence")


def _vfio_rings(prog: drgn.Program, owner, m) -> list[str]:
    """Why a VFIO-owned function's DMA after the crash is unknown: its rings are in its
    owner's memory, where the owner put them; whether the dump kept those pages."""
    from dumpkit.target.pagemap import cma_reason, page_presence

    ev = [f"its rings are in the memory of {owner.owner_text}, wherever the owner put them: the kernel "
          "holds no record of them"]
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
        # a ring's base and indices are what the owner wrote into the device's registers
        # (RDBAL/RDH/RDT on an e1000e), which no dump holds: the pages alone do not say
        # where a ring is, and guessing one from their contents would be a claim without record
        ev.append("its owner's pages are in this dump, but where its rings are in them is in the device's "
                  "registers (the base and indices its owner wrote), not in memory: no record places them")
    elif status == "capture CMA":
        ev.append(f"its owner's pages are not in this dump ({cma_reason(prog, phys)})")
    else:
        ev.append(f"whether its owner's pages are in this dump is unknown (the dump file does not say for page "
                  f"{phys & ~0xFFF:#x})")
    return ev


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


def consistent(could: Claim, did: Claim, faults: list, logs: list[str]) -> tuple[Claim, Claim]:
    """Claims that follow from one another, made to agree: an IOMMU fault the capture
    kernel logged from the device is DMA it issued after the crash (observed), and a device
    that did DMA after the crash could do DMA. Evidence that says otherwise is kept in the
    claim it came from, marked as contradicted, never dropped."""
    if faults and did.value is not True:
        was = f"; its rings: {'; '.join(did.evidence)}" if did.evidence else ""
        did = Claim(True, [f"{len(faults)} IOMMU fault(s) from it logged by the capture kernel: DMA it issued "
                           f"after the crash (observed){was}"], sources=did.sources + logs, basis=OBSERVED,
                    phrase=DID_FAULTS)
    elif faults:
        # completions (inferred) and faults (observed): the faults settle it
        did = Claim(True, [f"{len(faults)} IOMMU fault(s) from it logged by the capture kernel: DMA it issued "
                           "after the crash (observed)"] + did.evidence, sources=did.sources + logs,
                    basis=OBSERVED, phrase=DID_FAULTS)
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


SPEC = ClaimSpec(
    name="did_dma_after_crash", header="did", label="DMA after the crash", question="DMA after the crash",
    short="DMA after crash", means="did DMA after the crash",
    words=(("yes", "observed: the capture kernel logged IOMMU faults from it"),
           ("yes, inferred", "completions in its rings that the crashed kernel never processed"),
           ("no evidence", "every ring processed (or none set up): nothing shows DMA"),
           ("no", "it could not DMA"),
           ("unknown", "its rings cannot be read (no decoder, no debug info, lost page)")),
    column="dma_after_crash", judge=judge)
