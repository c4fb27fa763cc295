"""Post-crash DMA evidence from device rings in the crashed kernel's memory: one small
decoder per driver behind :class:`~dumpkit.rings.base.RingDecoder`. A built-in decoder is
one module of this package with a ``DECODER`` (found by listing the package, so adding
one touches no other file); other packages register theirs in the ``dumpkit.rings``
entry-point group (an entry point names a ``RingDecoder`` or a list of them). Both form
one registry; callers ask by device, never by driver."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys

import drgn

from dumpkit.kernel import device_driver_name, device_name
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, RingEvidence, read_trail
from dumpkit.target.debuginfo import module_debug_status

__all__ = ["RingEvidence", "QueueEvidence", "DmaBuffer", "RingDecoder", "decoders", "decoder_for",
           "ring_evidence", "iommu_bypass", "dma_buffers", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "dumpkit.rings"
READ_ERRORS = (drgn.FaultError, LookupError, ValueError, TypeError, AttributeError)


def _builtin() -> tuple[RingDecoder, ...]:
    """The ``DECODER`` of every module of this package, by module name. Listing the package
    rather than entry points keeps the built-ins working from a source tree that was
    never installed (no distribution metadata)."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        decoder = getattr(module, "DECODER", None)
        if isinstance(decoder, RingDecoder):
            found.append(decoder)
    return tuple(found)


BUILTIN = _builtin()


@functools.cache
def decoders() -> tuple[RingDecoder, ...]:
    """Built-in decoders, then those registered by installed packages. A plug-in that
    fails to load is skipped with one line on stderr; it never stops an analysis."""
    from importlib.metadata import entry_points

    found = list(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            items = obj if isinstance(obj, (list, tuple)) else [obj]
            if not all(isinstance(d, RingDecoder) for d in items):
                raise TypeError("not a dumpkit.rings.RingDecoder")
        except Exception as e:  # a third party's import error must not stop an analysis
            print(f"dumpkit: ring decoder plug-in {ep.name} ({ep.value}) skipped: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        found.extend(items)
    return tuple(found)


def decoder_for(driver: str | None) -> RingDecoder | None:
    """The decoder serving a driver; a plug-in's replaces a built-in one for the same driver."""
    match = None
    for d in decoders():
        if driver in d.drivers:
            match = d
    return match


def _driver(pdev: drgn.Object) -> str | None:
    return device_driver_name(pdev.dev)


def _missing_module(prog: drgn.Program, decoder: RingDecoder) -> str | None:
    for module in decoder.modules:
        reason = module_debug_status(prog, module)
        if reason:
            return reason
    return None


def iommu_bypass(prog: drgn.Program, pdev: drgn.Object) -> tuple[bool | None, str]:
    """Whether the driver set the device up to DMA with physical addresses, around the
    IOMMU: ``(True, why)``, ``(False, "")``, or ``(None, reason)`` when its state cannot
    be read (for example no debug info for the driver's module).

    :param pdev: ``struct pci_dev *``
    """
    from dumpkit.target.walk import describe_fault

    try:
        driver = _driver(pdev)
    except drgn.FaultError as e:
        return None, describe_fault(prog, e, "its driver (struct device_driver)")
    decoder = decoder_for(driver)
    if decoder is None or decoder.bypasses_iommu is None:
        return False, ""
    reason = _missing_module(prog, decoder)
    if reason:
        return None, reason
    try:
        return decoder.bypasses_iommu(prog, pdev)
    except READ_ERRORS as e:
        return None, f"driver state unreadable ({type(e).__name__}: {e})"


def dma_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """The DMA buffers the device's driver structures name (empty when no decoder knows
    any, or they cannot be read)."""
    try:
        decoder = decoder_for(_driver(pdev))
        if decoder is None or decoder.buffers is None or _missing_module(prog, decoder):
            return []
        return decoder.buffers(prog, pdev)
    except READ_ERRORS:
        return []


def ring_evidence(prog: drgn.Program, pdev: drgn.Object, translate=None) -> RingEvidence:
    """Decode the rings of one PCI function.

    :param pdev: ``struct pci_dev *``
    :param translate: optional ``iova -> physical address or None`` for the device
        (its IOMMU mappings); without it DMA addresses are taken as physical
    """
    from dumpkit.target.walk import describe_fault

    name = device_name(pdev.dev)
    try:
        driver = _driver(pdev)
    except drgn.FaultError as e:
        return RingEvidence(name, None, "error", note=describe_fault(prog, e, f"the driver of {name}"),
                            sources=[f"struct pci_dev {name} @{pdev.value_():#x}"])
    decoder = decoder_for(driver)
    if decoder is None:
        return RingEvidence(name, driver, "no ring decoder",
                            note="no driver bound" if driver is None else f"no ring decoder for driver {driver}")
    label = f"{decoder.name} {decoder.version}"
    reason = _missing_module(prog, decoder)
    if reason:
        return RingEvidence(name, driver, "no debug info", note=reason, decoder=label)
    trail: list = [(f"struct pci_dev {name}", pdev.value_(), drgn.sizeof(pdev.type_.type))]
    token = read_trail().set(trail)
    try:
        queues = decoder.decode(prog, pdev)
    except drgn.FaultError as e:
        return RingEvidence(name, driver, "error", note=describe_fault(prog, e, _holder(trail, e)), decoder=label,
                            sources=_sources(trail))
    except READ_ERRORS as e:
        return RingEvidence(name, driver, "error", note=f"{type(e).__name__}: {e}", decoder=label,
                            sources=_sources(trail))
    finally:
        read_trail().reset(token)
    sources = _sources(trail)
    if not queues:
        return RingEvidence(name, driver, "not set up", note="driver bound but no rings allocated", decoder=label,
                            sources=sources)
    pages, unresolved = set(), 0
    for q in queues:
        for addr in q.dma_addresses:
            phys = translate(addr) if translate else addr
            if phys is not None:
                pages.add(phys & ~0xFFF)
            else:
                unresolved += 1
    return RingEvidence(name, driver, "decoded", queues, phys_pages=sorted(pages), decoder=label,
                        sources=sources, unresolved=unresolved)


def _sources(trail: list) -> list[str]:
    return list(dict.fromkeys(f"{label} @{addr:#x}" for label, addr, _size in trail))


def _holder(trail: list, e: drgn.FaultError) -> str:
    """The recorded object the failed read fell in (the latest that holds the address),
    else the last one read: what the unreadable page held."""
    addr = getattr(e, "address", None)
    for label, start, size in reversed(trail):
        if addr is not None and start <= addr < start + size:
            return label
    return f"driver state read after {trail[-1][0]}" if trail else "driver state"
