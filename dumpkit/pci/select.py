"""lspci's device selection: ``-s [[[[DOMAIN]:]BUS]:][DEV][.[FUNC]]`` and
``-d [VENDOR]:[DEVICE][:CLASS[:PROGIF]]``, parsed and matched as pciutils does
(lib/filter.c: ``pci_filter_parse_slot``, ``pci_filter_parse_id``, ``pci_filter_match``).

What pciutils accepts, and so what this module accepts:

* every number is hexadecimal; an empty field or ``*`` means "any"; a field's value
  may carry a leading ``0x`` (except the class, see below); a value over the field's
  maximum (domain 7fffffff, bus ff, device 1f, function 7, vendor/device ffff,
  class ffff, prog-if ff) is refused;
* ``-s``: with three ``:``-fields the first is the domain, with two or more the one
  before the last is the bus, the last is ``DEV.FUNC`` (either part may be left out:
  ``2:0.0``, ``02:``, ``.1``, ``1f``, ``0000:00:1f``, ``*:*.*``); at most 3 fields;
* ``-d``: at least ``VENDOR:DEVICE`` (both may be empty), at most 4 fields; in the class
  an ``x`` is a wildcard digit (``-d ::0x00`` = any class 0?00), so no ``0x`` prefix;
* an expression of 64 bytes or more is refused ("Expression too long");
* several ``-s``/``-d`` refine one filter: a later one overrides the fields it gives
  and keeps the others (``-s 02: -s .0`` = bus 02, function 0), and ``-s`` with ``-d``
  must both match.

Numbers are computed in 32-bit unsigned arithmetic as in C, so the odd inputs pciutils
accepts (a domain of nine digits wraps) are accepted the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass

from dumpkit.pci.collect import PciDevice

__all__ = ["ANY", "FilterError", "PciFilter", "parse_id", "parse_slot", "select"]

ANY = -1
_U32 = 0xFFFFFFFF
_BUF_SIZE = 64          # lib/filter.c BUF_SIZE: expressions must be shorter


class FilterError(ValueError):
    """An expression pciutils refuses; the message is pciutils' own ("Invalid bus number")."""


@dataclass(frozen=True)
class PciFilter:
    """One lspci filter: ANY (-1) where a field was not given; ``class_mask`` keeps the
    digits of ``device_class`` that must match (an ``x`` clears its nibble)."""

    domain: int = ANY
    bus: int = ANY
    slot: int = ANY
    func: int = ANY
    vendor: int = ANY
    device: int = ANY
    device_class: int = ANY
    class_mask: int = _U32
    prog_if: int = ANY

    def matches(self, dev: PciDevice) -> bool:
        """Whether ``dev`` passes, field by field as ``pci_filter_match`` compares them.
        A class or prog-if filter never matches a function whose class is unknown."""
        if any(want != ANY and want != have for want, have in
               ((self.domain, dev.domain), (self.bus, dev.bus), (self.slot, dev.slot),
                (self.func, dev.function))):
            return False
        if (self.vendor != ANY and self.vendor != dev.vendor) or (self.device != ANY and self.device != dev.device):
            return False
        if self.device_class != ANY:
            if dev.class_code is None or (self.device_class ^ (dev.class_code >> 8)) & self.class_mask:
                return False
        if self.prog_if != ANY:
            if dev.class_code is None or self.prog_if != dev.class_code & 0xFF:
                return False
        return True

    @property
    def is_any(self) -> bool:
        """True when nothing is selected against (``-s ''``, ``-s *:*``, ``-d :``)."""
        return self == PciFilter()


def _split(text: str, sep: str, count: int, check_length: bool) -> list[str | None]:
    """``split_to_fields``: at most ``count`` fields, missing ones None."""
    if check_length and len(os.fsencode(text)) >= _BUF_SIZE:
        raise FilterError("Expression too long")
    fields: list[str | None] = list(text.split(sep))
    if len(fields) > count:
        raise FilterError("Too many fields")
    return fields + [None] * (count - len(fields))


def _defined(field: str | None) -> bool:
    return bool(field) and field != "*"


def _hex_field(text: str | None, maximum: int, error: str, wildcards: bool = False) -> tuple[int, int] | None:
    """``parse_hex_field``: (value, mask), or None for "any" (empty or ``*``). With
    ``wildcards`` (the class) an ``x`` is a digit that matches anything, and a leading
    ``0x`` is not skipped; the bound is checked after every digit, in 32-bit arithmetic."""
    if not _defined(text):
        return None
    assert text is not None
    if not wildcards and text[:2] in ("0x", "0X"):
        text = text[2:]
    out, mask, bound = 0, _U32, 0
    for c in text:
        if c in "xX" and wildcards:
            out, bound, mask = out << 4 & _U32, (bound << 4 | 1) & _U32, mask << 4 & _U32
        else:
            if "0" <= c <= "9":
                digit = ord(c) - ord("0")
            elif "a" <= c.lower() <= "f" and c.isascii():
                digit = ord(c.lower()) - ord("a") + 10
            else:
                raise FilterError(error)
            out, bound, mask = (out << 4 | digit) & _U32, (bound << 4 | digit) & _U32, (mask << 4 | 0xF) & _U32
        if bound > maximum:
            raise FilterError(error)
    return out, mask


def _set(f: PciFilter, name: str, parsed: tuple[int, int] | None, mask_name: str | None = None) -> PciFilter:
    if parsed is None:
        return f                      # pciutils keeps what the field held
    changes = {name: parsed[0]}
    if mask_name:
        changes[mask_name] = parsed[1]
    return dataclasses.replace(f, **changes)


def parse_slot(text: str, base: PciFilter | None = None) -> PciFilter:
    """``-s [[[[DOMAIN]:]BUS]:][DEV][.[FUNC]]`` applied over ``base`` (default: any).

    :raises FilterError: with pciutils' message ("Invalid slot number", "Too many fields")
    """
    f = base or PciFilter()
    fields = _split(text, ":", 3, check_length=True)
    i = 0
    if fields[2] is not None:
        f = _set(f, "domain", _hex_field(fields[0], 0x7FFFFFFF, "Invalid domain number"))
        i += 1
    if fields[i + 1] is not None:
        f = _set(f, "bus", _hex_field(fields[i], 0xFF, "Invalid bus number"))
        i += 1
    devfn = fields[i]
    if _defined(devfn):
        assert devfn is not None
        try:
            slot, func = _split(devfn, ".", 2, check_length=False)
        except FilterError:
            raise FilterError("Invalid slot/function number") from None
        f = _set(f, "slot", _hex_field(slot, 0x1F, "Invalid slot number"))
        f = _set(f, "func", _hex_field(func, 7, "Invalid function number"))
    return f


def parse_id(text: str, base: PciFilter | None = None) -> PciFilter:
    """``-d [VENDOR]:[DEVICE][:CLASS[:PROGIF]]`` applied over ``base`` (default: any).

    :raises FilterError: with pciutils' message ("Invalid vendor ID", "At least two fields must be given")
    """
    f = base or PciFilter()
    vendor, device, cls, prog_if = _split(text, ":", 4, check_length=True)
    if device is None:
        raise FilterError("At least two fields must be given")
    f = _set(f, "vendor", _hex_field(vendor, 0xFFFF, "Invalid vendor ID"))
    f = _set(f, "device", _hex_field(device, 0xFFFF, "Invalid device ID"))
    f = _set(f, "device_class", _hex_field(cls, 0xFFFF, "Invalid class code", wildcards=True), "class_mask")
    return _set(f, "prog_if", _hex_field(prog_if, 0xFF, "Invalid programming interface code"))


def select(devices: Iterable[PciDevice], f: PciFilter | None) -> list[PciDevice]:
    """The functions ``f`` matches, in their order (all of them when ``f`` is None)."""
    return [d for d in devices if f is None or f.matches(d)]
