"""Names for PCI ids from the pci.ids database (Debian's pci.ids package)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["PCI_IDS_PATHS", "PciIds", "load_pci_ids"]

PCI_IDS_PATHS = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"),
                 Path("/usr/share/pci.ids"))


@dataclass
class PciIds:
    """Parsed pci.ids; lookups return None when a name is not known."""

    path: str | None = None
    vendors: dict[int, str] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)
    subsystems: dict[tuple[int, int, int, int], str] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    subclasses: dict[tuple[int, int], str] = field(default_factory=dict)
    prog_ifs: dict[tuple[int, int, int], str] = field(default_factory=dict)

    def vendor(self, vendor: int) -> str | None:
        return self.vendors.get(vendor)

    def device(self, vendor: int, device: int) -> str | None:
        return self.devices.get((vendor, device))

    def subsystem(self, vendor: int, device: int, sub_vendor: int, sub_device: int) -> str | None:
        return self.subsystems.get((vendor, device, sub_vendor, sub_device))

    def class_name(self, class_code: int) -> str | None:
        """Most specific name for a 24-bit class code (class, subclass, prog-if)."""
        base, sub, pi = class_code >> 16, (class_code >> 8) & 0xFF, class_code & 0xFF
        return (self.prog_ifs.get((base, sub, pi)) and
                f"{self.subclasses.get((base, sub))} ({self.prog_ifs[(base, sub, pi)]})"
                ) or self.subclasses.get((base, sub)) or self.classes.get(base)


def parse_pci_ids(text: str, path: str | None = None) -> PciIds:
    """Parse the pci.ids format (tab-indented vendor/device/subsystem and C class blocks)."""
    ids = PciIds(path)
    vendor = device = cls = sub = None
    in_classes = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        tabs = len(line) - len(line.lstrip("\t"))
        body = line.strip()
        try:
            if tabs == 0:
                if body.startswith("C "):
                    in_classes, code, name = True, *body[2:].split(None, 1)
                    cls = int(code, 16)
                    ids.classes[cls] = name
                elif len(body) > 4 and body[4] == " " and all(c in "0123456789abcdef" for c in body[:4]):
                    in_classes, vendor = False, int(body[:4], 16)
                    ids.vendors[vendor] = body[4:].strip()
                else:
                    in_classes, vendor = False, None  # another section (device types, languages...)
            elif in_classes:
                code, name = body.split(None, 1)
                if tabs == 1:
                    sub = int(code, 16)
                    ids.subclasses[(cls, sub)] = name
                else:
                    ids.prog_ifs[(cls, sub, int(code, 16))] = name
            elif vendor is not None:
                if tabs == 1:
                    code, name = body.split(None, 1)
                    device = int(code, 16)
                    ids.devices[(vendor, device)] = name
                elif tabs == 2:
                    sv, sd, name = body.split(None, 2)
                    ids.subsystems[(vendor, device, int(sv, 16), int(sd, 16))] = name
        except ValueError:
            continue
    return ids


@lru_cache(maxsize=4)
def load_pci_ids(path: str | None = None) -> PciIds:
    """The first pci.ids found (or the given one); an empty database if none exists,
    so that callers fall back to numeric ids."""
    candidates = [Path(path)] if path else list(PCI_IDS_PATHS)
    for p in candidates:
        if p.is_file():
            return parse_pci_ids(p.read_text(errors="replace"), str(p))
    return PciIds()
