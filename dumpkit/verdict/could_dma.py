"""Could the device DMA when the kernel died: its PCI state (driver, enable, Bus Master up to
the root, power), then what the IOMMU lets it reach."""

from __future__ import annotations

from dumpkit.units import iec
from dumpkit.verdict.claim import Claim, ClaimSpec
from dumpkit.verdict.words import INFERRED, OBSERVED

__all__ = ["SPEC", "judge"]

# PCI base classes whose functions firmware commonly leaves mastering (legacy USB
# emulation, boot storage, the boot framebuffer)
FIRMWARE_AGENTS = {0x0C03: "a USB controller", 0x01: "a storage controller", 0x03: "a display controller"}


def judge(ev, d, claims: dict[str, Claim]) -> Claim:
    """The PCI state, then what the IOMMU lets the device reach; its sources."""
    dev, entry, mapping, have_iommu = d.dev, d.entry, d.mapping, ev.capture.have_iommu
    claim = _from_state(dev, entry, mapping, d.bypass, d.bypass_why, have_iommu)
    if claim.value is not None:
        # read from the kernel's state and the IOMMU's tables; a VFIO owner's Bus Master
        # is not in the kernel's state at all
        claim.basis = INFERRED if dev.vfio is not None and claim.value else OBSERVED
    if dev.vfio is not None:
        claim.evidence += _vfio_evidence(dev.vfio, mapping)
        claim.sources += dev.vfio.sources
    if dev.pdev_address is not None:
        claim.sources.append(f"struct pci_dev {dev.bdf} @{dev.pdev_address:#x}")
    if have_iommu and not d.bypass:
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


def _from_driver(dev) -> Claim:
    """What the PCI state says before the IOMMU is asked: unknown without a driver (firmware
    may have left the device mastering), else the PCI view's own answer."""
    if "driver" in dev.unknown:
        return Claim(None, [f"whether a driver is bound is unknown: {dev.unknown['driver']}"])
    if dev.driver is None:
        ev = ["no driver bound; the kernel's Bus Master flag is software state and firmware may have left "
              "the device mastering"]
        agent = FIRMWARE_AGENTS.get(dev.class_code >> 8) or FIRMWARE_AGENTS.get(dev.class_code >> 16)
        if agent:
            ev.append(f"{agent}: firmware commonly keeps these doing DMA")
        return Claim(None, ev)
    return Claim(dev.could_dma, [dev.could_dma_reason] if dev.could_dma_reason else [])


def _unknown_unless_no(claim: Claim, why: str) -> Claim:
    """The IOMMU's part is unknown: a "no" of the PCI state stands, anything else is unknown."""
    if claim.value is not False:
        claim.value = None
    claim.evidence.append(why)
    return claim


def _from_state(dev, entry, mapping, bypass: bool | None, bypass_why: str, have_iommu: bool) -> Claim:
    claim = _from_driver(dev)
    if not have_iommu:
        if claim.value is not False:
            claim.evidence.append("no IOMMU in use: its DMA reaches all memory")
        return claim
    if bypass:
        claim.evidence.append(bypass_why)
        return claim
    if bypass is None:
        return _unknown_unless_no(claim, f"whether its DMA goes through the IOMMU is unknown: {bypass_why}")
    if entry is None:
        claim.evidence.append("no IOMMU unit translates it: its DMA reaches memory untranslated")
        return claim
    return _through_iommu(claim, entry, mapping)


def _through_iommu(claim: Claim, entry, mapping) -> Claim:
    """What the device's IOMMU translation entry and page tables let it write."""
    reason = entry.detail.get("reason")
    if entry.translation == "unknown":
        return _unknown_unless_no(claim, f"what the IOMMU allowed it is unknown: {reason or '; '.join(entry.errors)}")
    if entry.translation == "blocked":
        claim.value = False
        claim.evidence.append(reason or "the IOMMU blocks its DMA")
    elif entry.translation in ("pass-through", "untranslated"):
        claim.evidence.append(f"IOMMU {entry.translation}: all memory reachable"
                              + (f" ({reason})" if reason else ""))
    elif mapping is not None and mapping.summary.get("writable_bytes"):
        least = "at least " if mapping.errors else ""
        claim.evidence.append(f"{least}{iec(mapping.summary['writable_bytes'])} writable through the IOMMU in "
                              f"{mapping.summary['ranges']} range{'s' if mapping.summary['ranges'] != 1 else ''}"
                              + (f" of its {entry.tables} page tables" if entry.tables else ""))
        if mapping.errors:
            claim.evidence.append(f"some of its IOMMU page tables are unreadable or damaged: {mapping.errors[0]}")
    elif mapping is not None and mapping.errors:
        return _unknown_unless_no(claim, f"its IOMMU page tables are unreadable or damaged: {mapping.errors[0]}")
    elif mapping is not None:
        claim.value = False
        claim.evidence.append("no writable IOMMU mapping: any DMA it issues is blocked")
    return claim


SPEC = ClaimSpec(
    name="could_dma", header="could", label="could DMA at the crash", question="could DMA at the crash",
    short="could DMA", means="could DMA when the kernel died",
    words=(("yes", "driver, enable, Bus Master up to the root and the IOMMU let it"),
           ("no", "something on the way blocks it (the IOMMU, Bus Master off, powered down)"),
           ("unknown", "the dump cannot say (no driver: firmware may leave devices mastering)")),
    column="could_dma", judge=judge)
