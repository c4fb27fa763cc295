"""Bounded walks over kernel lists: a corrupted dump can make any list loop or point
anywhere, so every walk stops at a repeated node, a length limit or an unreadable link,
with an error that names the list, instead of hanging. The PCI device list is walked
once per program and reused by every collector."""

from __future__ import annotations

from collections.abc import Iterator

import drgn

from dumpkit.kernel import device_name

__all__ = ["ListCorrupt", "bounded_list", "pci_devices", "unreadable_pci_devices", "describe_fault", "MAX_LIST",
           "MAX_PCI_DEVICES"]

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
        raise ListCorrupt(f"{what} unreadable after {len(seen)} entries: "
                          + describe_fault(head.prog_, e, f"entry {len(seen)} ({type_})")) from None


def pci_devices(prog: drgn.Program) -> tuple[list[tuple[str, drgn.Object]], str | None]:
    """Every ``struct pci_dev *`` on the kernel's device list with its name, walked once
    per program (cached in ``prog.cache``). A function whose own name cannot be read is
    left out here (see :func:`unreadable_pci_devices`); the walk goes on, since the list
    links live outside ``struct pci_dev``.

    :return: (the functions read, an error saying where the walk stopped or None)
    """
    return _walk_pci(prog)[:2]


def unreadable_pci_devices(prog: drgn.Program) -> list[tuple[int, str]]:
    """(address, why) of every ``struct pci_dev`` on the device list whose name could
    not be read: a function the dump lost, to be reported, never silently dropped."""
    return _walk_pci(prog)[2]


def _walk_pci(prog: drgn.Program):
    cached = prog.cache.get("dumpkit.pci_devices")
    if cached is None:
        from drgn.helpers.linux.pci import for_each_pci_dev

        out: list[tuple[str, drgn.Object]] = []
        lost: list[tuple[int, str]] = []
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
                try:
                    out.append((device_name(pdev.dev), pdev))
                except drgn.FaultError as e:
                    lost.append((addr, describe_fault(prog, e, f"struct pci_dev @{addr:#x}")))
        except drgn.FaultError as e:
            error = ("the PCI device list could not be read past "
                     + describe_fault(prog, e, f"{len(seen)} functions: the next link"))
        cached = prog.cache["dumpkit.pci_devices"] = (out, error, lost)
    return cached


def describe_fault(prog: drgn.Program, e: drgn.FaultError, what: str, physical: bool = False) -> str:
    """One phrase naming what could not be read and where: "<what> unreadable at <address>,
    page <physical page> of the dump (<drgn's reason>)". The physical page is what a user
    checks in the dump file; it is left out when the address cannot be translated.

    :param physical: the fault's address is physical (an IOMMU table read), not virtual
    """
    from dumpkit.target.pagemap import missing_page_reason

    addr = getattr(e, "address", None)
    reason = getattr(e, "message", None) or str(e)
    if addr is None:
        return f"{what} unreadable ({reason})"
    phys = addr if physical else _phys(prog, addr)
    # the dump file may say why the page is missing: excluded by the dump level, not damage
    missing = missing_page_reason(prog, phys) if phys is not None else None
    at = f"physical {addr:#x}" if physical else f"{addr:#x}"
    if missing:
        return f"{what} unreadable at {at}: {missing}"
    page = f", page {phys & ~0xFFF:#x} of the dump" if phys is not None else ""
    return f"{what} unreadable at {at}{page} ({reason})"


def _phys(prog: drgn.Program, addr: int) -> int | None:
    """The physical address behind a kernel virtual address (None: cannot tell)."""
    from drgn.helpers.linux.mm import follow_phys

    try:
        return follow_phys(prog["init_mm"].address_of_(), addr).value_()
    except (drgn.FaultError, LookupError, ValueError, OverflowError):
        return None
