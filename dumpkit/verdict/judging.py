"""Judging a dump: its evidence gathered once (:mod:`dumpkit.verdict.evidence`), then each
endpoint's evidence (:mod:`dumpkit.verdict.device`) and its claims, in the order of
:data:`dumpkit.verdict.claims.CLAIMS`."""

from __future__ import annotations

import drgn

from dumpkit.kernel import device_driver_name
from dumpkit.verdict.claim import Claim
from dumpkit.verdict.claims import CLAIMS
from dumpkit.verdict.cma import cma_evidence, cma_targets
from dumpkit.verdict.device import read_device
from dumpkit.verdict.evidence import DumpEvidence, gather
from dumpkit.verdict.model import EndpointVerdict, Verdicts

__all__ = ["judge"]


def judge(dump, capture_logs=(), capture_dump=None, force: bool = False) -> Verdicts:
    """Judge every endpoint (non-bridge function) of a first-kernel dump.

    :param dump: the crashed kernel's :class:`dumpkit.Dump`
    :param capture_logs: the capture kernel's log(s) (or a vmcore-dmesg): IOMMU faults,
        table copies, reset lines. Each is checked against the dump first. Paths (files,
        FIFOs, compressed logs: each read once) or :class:`dumpkit.logs.LogText` already read.
    :param capture_dump: optionally the capture kernel's own dump (copied tables)
    :param force: use capture evidence that does not match this crash (with a warning)
    :raises CaptureMismatch: a capture log from another crash, unless ``force``
    """
    ev = gather(dump, capture_logs, capture_dump, force)
    out = [judge_endpoint(ev, dev) for dev in ev.tree if dev.is_endpoint]
    out += _unreadable_endpoints(ev.prog, ev.tree, ev.pdevs)
    info = dump.info
    ident = {"path": str(dump.path) if dump.path else dump.source, "kernel_release": info.kernel_release,
             "build_id": info.build_id, "format": info.format}
    return Verdicts(out, list(ev.texts), str(capture_dump.path) if capture_dump else None,
                    sorted(ev.reset), ev.not_reset, ev.errors, ev.warnings, ev.state.vendor, ev.checks,
                    ev.matches, ident, ev.capture.own)


def judge_endpoint(ev: DumpEvidence, dev) -> EndpointVerdict:
    """One endpoint's claims from the evidence, each judge reading those before it."""
    d = read_device(ev, dev)
    claims: dict[str, Claim] = {}
    for spec in CLAIMS:
        claims[spec.name] = spec.judge(ev, d, claims)
    cma = cma_targets(ev.prog, d)
    if cma is not None and claims["hit_capture_kernel"].applicable:
        claims["hit_capture_kernel"].evidence += cma_evidence(cma)
    ring = d.ring
    return EndpointVerdict(dev.bdf, d.name, dev.driver, **claims,
                           post_crash_completions=ring.unprocessed if ring else None, faults=len(d.faults),
                           reset_ports=d.ports, landed_pages=ring.phys_pages if ring else [], vendor=dev.vendor,
                           device=dev.device, decoder=ring.decoder if ring else None,
                           ring_status=ring.status if ring else None, rings=d.rings,
                           dma_owner=f"{dev.vfio.driver}: {dev.vfio.owner_text}" if dev.vfio is not None else None,
                           capture_cma=cma.as_dict() if cma is not None else None)


def _lost_function(prog: drgn.Program, tree, bdf: str, pdev) -> tuple[str, int, str, str | None] | None:
    """(bdf, address, why, driver) of a function on the kernel's list that the PCI view
    could not read; None for a bridge (not judged)."""
    from dumpkit.target.walk import describe_fault

    addr, driver = pdev.value_(), None
    try:
        if pdev.subordinate or pdev.member_("class").value_() >> 8 == 0x0600:
            return None             # a bridge or the host bridge: not judged
        driver = device_driver_name(pdev.dev)
        try:
            pdev.bus.number.value_()
        except drgn.FaultError as e:
            return bdf, addr, describe_fault(prog, e, f"struct pci_bus @{pdev.bus.value_():#x} of {bdf}"), driver
        why = next((err for err in getattr(tree, "errors", []) if f"{addr:#x}" in err),
                   f"struct pci_dev {bdf} @{addr:#x} could not be read whole")
    except drgn.FaultError as e:
        why = describe_fault(prog, e, f"struct pci_dev {bdf} @{addr:#x} or what it points to")
    return bdf, addr, why, driver


def _unreadable_endpoints(prog: drgn.Program, tree, pdevs: dict) -> list[EndpointVerdict]:
    """Functions on the kernel's device list that the PCI view could not read: every claim
    unknown, naming the object, rather than the function silently missing from the verdict."""
    from dumpkit.target.walk import unreadable_pci_devices

    lost = [_lost_function(prog, tree, bdf, pdev) for bdf, pdev in pdevs.items() if tree.get(bdf) is None]
    lost = [x for x in lost if x is not None]
    lost += [(f"?@{addr:#x}", addr, why, None) for addr, why in unreadable_pci_devices(prog)]
    return [EndpointVerdict(bdf, "PCI function (struct pci_dev unreadable)", driver,
                            **{c.name: Claim(None, [why], sources=[f"struct pci_dev @{addr:#x}"]) for c in CLAIMS},
                            unreadable=why)
            for bdf, addr, why, driver in lost]
