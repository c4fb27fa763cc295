"""Bounded walks over kernel lists: a corrupted dump can make any list loop or point
anywhere, so every walk stops at a repeated node, a length limit or an unreadable link,
with an error that names the list, instead of hanging. The PCI device list is walked
once per program and reused by every collector."""

from __future__ import annotations

from collections.abc import Iterator

import drgn

__all__ = ["ListCorrupt", "bounded_list", "pci_devices", "MAX_LIST", "MAX_PCI_DEVICES"]

MAX_LIST = 1 << 16
MAX_PCI_DEVICES = 1 << 16       # 256 buses x 256 functions per segment is the most a sane list holds


class ListCorrupt(LookupError):
    """A kernel list loops, is longer than any real one, or has an unreadable link. A
    LookupError, like drgn's own "not found" errors, so every collector that degrades on
    missing kernel data degrades on this too."""


def bounded_list(head: drgn.Object, type_: str, member: str, what: str,
                 limit: int = MAX_LIST) -> Iterator[drgn.Object]:
    """``list_for_each_entry`` that raises :class:`ListCorrupt` on a loop, more than
    ``limit`` entries or an unreadable link.

    :param head: ``struct list_head *`` of the list
    :param what: how the list is named in the error ("dmar_drhd_units")
    """
    seen: set[int] = set()
    try:
        pos = head.next.read_()
        end = head.value_()
        while pos.value_() != end:
            addr = pos.value_()
            if addr in seen:
                raise ListCorrupt(f"{what} loops back to {addr:#x} after {len(seen)} entries")
            if len(seen) >= limit:
                raise ListCorrupt(f"{what} has more than {limit} entries: corrupted")
            seen.add(addr)
            yield drgn.container_of(pos, type_, member)
            pos = pos.next.read_()
    except drgn.FaultError as e:
        raise ListCorrupt(f"{what} unreadable after {len(seen)} entries: {e}") from None


def pci_devices(prog: drgn.Program) -> tuple[list[tuple[str, drgn.Object]], str | None]:
    """Every ``struct pci_dev *`` on the kernel's device list with its name, walked once
    per program (cached in ``prog.cache``).

    :return: (the functions read, an error saying where the walk stopped or None)
    """
    cached = prog.cache.get("dumpkit.pci_devices")
    if cached is None:
        from drgn.helpers.linux.pci import for_each_pci_dev

        out: list[tuple[str, drgn.Object]] = []
        seen: set[int] = set()
        error = None
        try:
            for pdev in for_each_pci_dev(prog):
                addr = pdev.value_()
                if addr in seen:
                    error = f"the PCI device list loops back to {addr:#x}: it is corrupted"
                    break
                if len(seen) >= MAX_PCI_DEVICES:
                    error = f"the PCI device list has more than {MAX_PCI_DEVICES} entries: corrupted"
                    break
                seen.add(addr)
                out.append((pdev.dev.kobj.name.string_().decode(errors="replace"), pdev))
        except drgn.FaultError as e:
            error = f"the PCI device list could not be read past {len(seen)} functions: {e}"
        cached = prog.cache["dumpkit.pci_devices"] = (out, error)
    return cached
