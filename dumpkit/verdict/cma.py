"""DMA that can land in the memory a capture kernel boots on when the crashed kernel
reserved it from CMA (``crashkernel=SIZE,cma``, v6.17+).

The first kernel lends that memory to movable pages. On a crash ``__crash_kexec()`` calls
``crash_cma_clear_pending_dma()``, which waits a fixed 10 s for short-term-pinned DMA to
finish, then boots the capture kernel on it; nothing quiesces the devices. The vmcore leaves
those ranges out. So every DMA target dumpkit can see in the dump — a read command still in
flight (its destination pages), the writable IOMMU mappings, the buffers a ring decoder
names — is held against the ranges: a target inside is DMA that can land in the capture
kernel's memory; whether it came before the 10 s ran out the vmcore cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

from dumpkit.target.pagemap import crash_cma_range

__all__ = ["CmaTargets", "cma_evidence", "cma_ranges", "cma_targets"]

PAGE = 4096
MAX_PAGES = 1 << 20           # bound on the pages counted per source (4 GiB)


@dataclass
class CmaTargets:
    """One endpoint's DMA targets inside the crashkernel CMA ranges: pages per source
    (``lines`` says each in words), and what could not be looked at."""

    pages: int = 0
    lines: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    # per read command with destination pages inside: queue, command id, bytes, LBA, pages
    # inside, and whether the controller had completed it when the dump was written
    commands: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"pages": self.pages, "targets": self.lines, "commands": self.commands, "unknown": self.unknown}


def cma_ranges(prog: drgn.Program) -> tuple[tuple[int, int], ...]:
    """The dump's crashkernel CMA ranges (inclusive), () when it has none or predates 6.17."""
    crash_cma_range(prog, 0)        # fills the cache
    return prog.cache.get("dumpkit.crash_cma_ranges", ())


def _inside(prog: drgn.Program, phys_pages) -> int:
    return sum(1 for p in phys_pages if p is not None and crash_cma_range(prog, p) is not None)


def _in_flight_reads(prog: drgn.Program, d, out: CmaTargets) -> None:
    """An nvme function's reads the crashed kernel never saw complete: their destination
    pages. A read still in flight when the dump was written moves its data later; one the
    controller completed without the kernel processing it did so after the kernel stopped
    (its completion never processed) — into these pages, possibly after the 10 s wait."""
    from dumpkit.rings.nvme_inflight import data_pages, in_flight_commands

    try:
        cmds = in_flight_commands(prog, d.pdev)
    except (drgn.FaultError, LookupError, AttributeError, ValueError) as e:
        out.unknown.append(f"its in-flight commands cannot be read ({type(e).__name__}: {e})")
        return
    for c in cmds:
        if not c.writes_memory:
            continue
        pages, why = data_pages(prog, c, d.translate)
        inside = _inside(prog, (d.translate(p) for p in pages[:MAX_PAGES]))
        if why:
            out.unknown.append(f"read cid {c.command_id:#x} on queue {c.qid}: {why}")
        if inside:
            out.pages += inside
            state = "completed by the device, never processed" if c.device_completed else "still in flight"
            out.lines.append(f"a read {state} (queue {c.qid}, command id {c.command_id:#x}, "
                             f"{c.data_bytes} bytes from LBA {c.slba:#x}): {inside} of its {len(pages)} destination "
                             f"pages lie in the capture kernel's CMA memory")
            out.commands.append({"qid": c.qid, "command_id": c.command_id, "bytes": c.data_bytes, "slba": c.slba,
                                 "pages_inside": inside, "pages": len(pages), "device_completed": c.device_completed})


def _mappings(prog: drgn.Program, d, ranges, out: CmaTargets) -> None:
    """The device's writable IOMMU mappings that reach into the ranges."""
    m = d.mapping
    if m is None or d.untranslated:
        return
    pages = 0
    for r in m.ranges:
        if not r.write:
            continue
        for lo, hi in ranges:
            a, b = max(r.phys, lo), min(r.phys + r.size - 1, hi)
            if a <= b:
                pages += (b - a) // PAGE + 1
    if pages:
        out.pages += pages
        out.lines.append(f"{pages} pages of the capture kernel's CMA memory are writable to it through the IOMMU")


def _ring_buffers(prog: drgn.Program, d, out: CmaTargets) -> None:
    """The buffers its rings handed to the device and it had not used yet (the decoder's
    DMA addresses)."""
    ring = d.ring
    if ring is None or ring.status != "decoded":
        return
    addrs = [a for q in ring.queues for a in q.dma_addresses][:MAX_PAGES]
    inside = _inside(prog, (d.translate(a) for a in addrs))
    if inside:
        out.pages += inside
        out.lines.append(f"{inside} of the buffers its rings name lie in the capture kernel's CMA memory")


def cma_targets(prog: drgn.Program, d) -> CmaTargets | None:
    """An endpoint's DMA targets inside the crashkernel CMA ranges (``d``: its
    :class:`dumpkit.verdict.device.DeviceEvidence`); None when the dump has no such ranges
    (the question does not arise)."""
    ranges = cma_ranges(prog)
    if not ranges:
        return None
    out = CmaTargets()
    if d.pdev is not None and d.dev.driver == "nvme":
        _in_flight_reads(prog, d, out)
    _mappings(prog, d, ranges, out)
    _ring_buffers(prog, d, out)
    return out


def cma_evidence(t: CmaTargets | None) -> list[str]:
    """The evidence line(s) of the capture-kernel claim."""
    if t is None:
        return []
    if t.pages:
        return ["DMA target inside the capture kernel's CMA memory (crashkernel=,cma: the crash waited 10 s for "
                "pinned DMA, then booted the capture kernel on it): " + "; ".join(t.lines)]
    return ["no DMA target visible in the dump lies in the capture kernel's CMA memory"
            + (f" ({'; '.join(t.unknown)})" if t.unknown else "")]
