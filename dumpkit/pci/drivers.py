"""``lspci -k``'s "Kernel modules" line, from a dump.

lspci asks libkmod which modules' aliases match a function's modalias: a question about
the modules on disk (modules.alias), which a dump does not hold. What a dump does hold
is every PCI driver the kernel had registered, with its ID table and the module that
owns it. So the modules named here are the **loaded** modules whose PCI driver's ID
table matches the function, as the kernel's ``pci_match_one_device()`` matches (vendor,
device, subsystem ids with PCI_ANY_ID, class under class_mask), in the order the drivers
were registered, each module once. Built-in drivers are no module and are not named;
modules that were not loaded cannot be known. Entries marked ``override_only`` match only
through driver_override and have no ``pci:`` alias, so they are skipped too (lspci would
not name them either). Dynamic ids (``new_id``) are not in modules.alias and are ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import drgn
from drgn import container_of
from drgn.helpers.linux.list import list_for_each_entry

from dumpkit.pci.collect import PciDevice

__all__ = ["DriverIds", "KernelModules", "kernel_modules", "pci_drivers"]

PCI_ANY_ID = 0xFFFFFFFF
_CHUNK = 64                 # ID table entries read at once
_MAX_ENTRIES = 1 << 16      # a table longer than this is not a table (damaged dump)


@dataclass
class DriverIds:
    """One registered PCI driver: its name, the module owning it (None: built in) and its
    ID table as (vendor, device, subvendor, subdevice, class, class_mask) tuples."""

    name: str
    module: str | None
    ids: list[tuple[int, int, int, int, int, int]]

    def matches(self, dev: PciDevice) -> bool:
        """``pci_match_one_device()`` over the table (subsystem ids of a function the
        kernel has none for count as 0)."""
        sv, sd = dev.subsystem_vendor or 0, dev.subsystem_device or 0
        cls = dev.class_code
        for vendor, device, subvendor, subdevice, klass, mask in self.ids:
            if ((vendor in (PCI_ANY_ID, dev.vendor)) and (device in (PCI_ANY_ID, dev.device))
                    and (subvendor in (PCI_ANY_ID, sv)) and (subdevice in (PCI_ANY_ID, sd))
                    and (not mask or (cls is not None and not (klass ^ cls) & mask))):
                return True
        return False


@dataclass
class KernelModules:
    """Per BDF the loaded modules whose driver matches it; ``errors``: drivers whose
    table could not be read (their module is then missing from the lists)."""

    by_bdf: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def get(self, bdf: str) -> list[str]:
        return self.by_bdf.get(bdf, [])


def _id_table(prog: drgn.Program, address: int) -> list[tuple[int, int, int, int, int, int]]:
    """The entries of a ``struct pci_device_id`` array up to its terminator (vendor,
    subvendor and class_mask all 0), without the override_only ones."""
    if not address:
        return []
    t = prog.type("struct pci_device_id")
    size = t.size
    off = {m.name: m.bit_offset // 8 for m in t.members if m.name}
    fields = ("vendor", "device", "subvendor", "subdevice", "class", "class_mask")
    override = off.get("override_only")
    out = []
    for start in range(0, _MAX_ENTRIES, _CHUNK):
        raw = prog.read(address + start * size, size * _CHUNK)
        for i in range(_CHUNK):
            base = i * size
            entry = tuple(struct.unpack_from("<I", raw, base + off[f])[0] for f in fields)
            if not (entry[0] or entry[2] or entry[5]):
                return out
            if override is not None and struct.unpack_from("<I", raw, base + override)[0]:
                continue
            out.append(entry)
    raise drgn.FaultError("PCI ID table without a terminator", address)


def _driver_objects(prog: drgn.Program) -> Iterator[drgn.Object]:
    """Every ``struct device_driver`` registered on the PCI bus."""
    from drgn.helpers.linux.device import bus_to_subsys

    sp = bus_to_subsys(prog["pci_bus_type"].address_of_())
    for kobj in list_for_each_entry("struct kobject", sp.drivers_kset.list.address_of_(), "entry"):
        yield container_of(kobj, "struct driver_private", "kobj").driver


def pci_drivers(prog: drgn.Program, errors: list[str] | None = None) -> list[DriverIds]:
    """The PCI drivers the kernel had registered, in registration order. A driver whose
    name or table cannot be read is left out and said in ``errors``."""
    out = []
    try:
        drivers = list(_driver_objects(prog))
    except (drgn.FaultError, LookupError) as e:
        if errors is not None:
            errors.append(f"the PCI driver list could not be read ({e})")
        return []
    for drv in drivers:
        try:
            name = drv.name.string_().decode(errors="replace")
            owner = drv.owner
            module = owner.name.string_().decode(errors="replace") if owner else None
            pdrv = container_of(drv, "struct pci_driver", "driver")
            ids = _id_table(prog, pdrv.id_table.value_()) if module else []
        except (drgn.FaultError, LookupError) as e:
            if errors is not None:
                errors.append(f"PCI driver at {drv.value_():#x} could not be read ({e})")
            continue
        out.append(DriverIds(name, module, ids))
    return out


def kernel_modules(prog: drgn.Program, devices: Iterable[PciDevice]) -> KernelModules:
    """lspci -k's "Kernel modules" for ``devices``, as far as the dump knows them."""
    result = KernelModules()
    drivers = [d for d in pci_drivers(prog, result.errors) if d.module]
    for dev in devices:
        names = [d.module for d in drivers if d.matches(dev)]
        result.by_bdf[dev.bdf] = list(dict.fromkeys(n for n in names if n))
    return result
