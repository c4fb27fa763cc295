"""Everything dumpkit knows about a kernel's VT-d state and the faults in its logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import drgn

from dumpkit.dmar.correlate import FaultCorrelation, correlate_faults
from dumpkit.dmar.faults import FaultRecord, parse_log, parse_printk
from dumpkit.dmar.mappings import DeviceMappings, collect_device_mappings
from dumpkit.dmar.tables import ContextEntry, collect_context_entries
from dumpkit.dmar.units import IommuUnit, collect_units
from dumpkit.errors import InputError

__all__ = ["DmarState", "collect_dmar", "CAPTURE_LOG_NAMES", "find_capture_logs"]

CAPTURE_LOG_NAMES = ("capture-dmesg.txt", "vmcore-dmesg.txt", "kexec-dmesg.log")


@dataclass
class DmarState:
    units: list[IommuUnit]
    entries: list[ContextEntry]
    mappings: list[DeviceMappings]
    faults: list[FaultRecord]
    correlations: list[FaultCorrelation]
    log_sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def find_capture_logs(dump_path: Path | None) -> list[Path]:
    """Capture-kernel logs saved beside a vmcore under their usual names."""
    if dump_path is None:
        return []
    return [dump_path.parent / n for n in CAPTURE_LOG_NAMES if (dump_path.parent / n).is_file()]


def collect_dmar(dump, logs: list[str | Path] = ()) -> DmarState:
    """VT-d units, context entries and mappings of a dump, the faults in its printk buffer
    and in the given text logs, and each DMA fault resolved against the dump.

    :param dump: a :class:`dumpkit.Dump`
    :param logs: text logs (capture kernel dmesg, vmcore-dmesg.txt, serial console)
    :raises InputError: a log that cannot be read
    """
    prog = dump.prog
    errors: list[str] = []
    try:
        units = collect_units(prog)
        entries = collect_context_entries(prog, units)
        mappings = collect_device_mappings(prog, entries)
    except (drgn.FaultError, LookupError, AttributeError) as e:
        units, entries, mappings = [], [], []
        errors.append(f"VT-d state unreadable in this dump: {type(e).__name__}: {e}")
    try:
        faults = parse_printk(prog, "printk")
        sources = ["printk"]
    except (drgn.FaultError, LookupError, AttributeError) as e:
        faults, sources = [], []
        errors.append(f"printk buffer unreadable: {e}")
    for log in logs:
        p = Path(log)
        try:
            text = p.read_text(errors="replace")
        except OSError as e:
            raise InputError(f"log {p}: {e.strerror}", "check the path") from None
        faults.extend(parse_log(text, p.name))
        sources.append(str(p))
    correlations = correlate_faults(prog, dump.pci(), mappings, faults)
    return DmarState(units, entries, mappings, faults, correlations, sources, errors)
