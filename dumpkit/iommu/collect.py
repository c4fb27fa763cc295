"""Everything dumpkit knows about a kernel's IOMMUs, whatever their vendor, and the faults
in its logs: one :class:`IommuState` per dump, filled by the backends that find their
hardware in it."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

from dumpkit.iommu.backends import BACKENDS
from dumpkit.iommu.model import DeviceMappings, IommuEvent, TranslationEntry, Unit, lookup
from dumpkit.kernel import device_iommu_group

__all__ = ["IommuState", "collect_iommu", "BACKENDS"]


@dataclass
class IommuState:
    """Units, per-device translation entries and mappings, in-memory events, log faults
    and their correlation with the dump.

    :param vendors: the backends that found hardware (empty: no IOMMU in use)
    :param raw: backend-specific collections for vendor renderers, by vendor
    """

    vendors: list[str] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    entries: list[TranslationEntry] = field(default_factory=list)
    mappings: list[DeviceMappings] = field(default_factory=list)
    events: list[IommuEvent] = field(default_factory=list)
    faults: list = field(default_factory=list)
    correlations: list = field(default_factory=list)
    log_sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    @property
    def vendor(self) -> str | None:
        """The IOMMU vendor(s) for display: "intel-vtd", "amd-vi", or None."""
        return "+".join(self.vendors) or None

    def entry(self, bdf: str) -> TranslationEntry | None:
        return next((e for e in self.entries if e.bdf == bdf), None)

    def mapping(self, bdf: str) -> DeviceMappings | None:
        return next((m for m in self.mappings if m.device == bdf), None)

    def translate(self, bdf: str, iova: int) -> tuple[int, bool, bool] | None:
        """(physical address, readable, writable) for a device's DMA address through the
        walked tables; None when not mapped (or the device is not translated)."""
        m = self.mapping(bdf)
        return lookup(m.leaves, iova) if m is not None and m.leaves else None


def collect_iommu(dump, logs=(), faults: list | None = None, log_sources: list[str] | None = None) -> IommuState:
    """The IOMMU state of a dump from every backend that finds its hardware, and the DMA
    faults of the given logs resolved against it.

    :param dump: a :class:`dumpkit.Dump`
    :param faults: fault records already parsed (printk and logs); parsed here otherwise
    """
    from dumpkit.iommu.correlate import correlate_faults

    prog = dump.prog
    state = IommuState()
    pci_bdfs = {d.bdf for d in dump.pci()}
    for backend in BACKENDS:
        if not backend.reads_memory or not backend.detect(prog):
            continue
        vendor = backend.name
        got = backend.collect(prog, pci_bdfs)
        state.vendors.append(vendor)
        state.units += got.units
        state.entries += got.entries
        state.mappings += got.mappings
        state.events += got.events
        state.errors += got.errors
        state.raw[vendor] = got
    _fill_domain_types(prog, state.entries)
    if faults is None:
        faults, log_sources = _parse_logs(prog, logs, state.errors)
    state.faults, state.log_sources = faults, list(log_sources or [])
    state.correlations = correlate_faults(prog, dump.pci(), state.mappings, state.faults, state.entries)
    return state


# include/linux/iommu.h IOMMU_DOMAIN_* (DMA_FQ since 5.15)
DOMAIN_TYPES = {0: "BLOCKED", 4: "IDENTITY", 1: "UNMANAGED", 3: "DMA", 11: "DMA_FQ"}


def _fill_domain_types(prog: drgn.Program, entries: list[TranslationEntry]) -> None:
    """The kernel's domain type of each device's IOMMU group, where a backend did not
    say (the generic iommu_group, the same for every vendor)."""
    from dumpkit.target.walk import pci_devices

    missing = {e.device: e for e in entries if e.device and e.domain_type is None}
    if not missing:
        return
    for name, pdev in pci_devices(prog)[0]:
        e = missing.get(name)
        if e is None:
            continue
        try:
            group = device_iommu_group(pdev.dev)
            if group and group.domain:
                t = group.domain.type.value_()
                e.domain_type = DOMAIN_TYPES.get(t, f"type {t:#x}")
        except (drgn.FaultError, LookupError, AttributeError):
            continue


def _parse_logs(prog: drgn.Program, logs, errors: list[str]) -> tuple[list, list[str]]:
    from pathlib import Path

    from dumpkit.iommu.faults import parse_log, parse_printk
    from dumpkit.logs import log_text

    try:
        faults, sources = parse_printk(prog, "printk"), ["printk"]
    except (drgn.FaultError, LookupError, AttributeError) as e:
        faults, sources = [], []
        errors.append(f"printk buffer unreadable: {e}")
    for log in logs:
        text = log_text(log)
        faults.extend(parse_log(str(text), Path(text.path).name if text.path else "log"))
        sources.append(str(text.path or log))
    return faults, sources
