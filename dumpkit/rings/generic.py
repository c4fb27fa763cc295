"""What memory shows about a PCI function's DMA when no ring decoder knows its driver,
and small helpers the SCSI decoders share.

:func:`generic_evidence` says "no ring decoder for driver X" and then only what the
dump holds for any device: whether a driver is bound, its DMA masks, whether the kernel
enabled it as a bus master, and (when the caller passes them) how much of the IOMMU
mappings for it is writable. Which buffers the driver gave the device, and whether the
device completed anything after the crash, live in the driver's own structures, which
only a decoder for that driver can read."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import drgn

from dumpkit.kernel import device_driver_name, has_member
from dumpkit.rings.base import reads

__all__ = ["generic_evidence", "managed_coherent", "scsi_data_dma", "sg_dma_addresses"]

DMA_MAPPING_ERROR = (1 << 64) - 1
SG_CHAIN, SG_END = 0x1, 0x2
MAX_SG = 4096
MAX_DEVRES = 4096
PAGE_SIZE = 4096

Mappings = Callable[[drgn.Object], Iterable[int]] | Iterable[int] | None


def _mask_text(mask: int) -> str:
    if not mask:
        return "0 (no DMA)"
    bits = mask.bit_length()
    return f"{bits}-bit" if mask == (1 << bits) - 1 else f"{mask:#x}"


def managed_coherent(prog: drgn.Program, dev: drgn.Object) -> list[tuple[int, int]] | None:
    """(device address, size) of the coherent DMA buffers a driver allocated with the
    managed ``dmam_alloc_coherent`` (device resources released by ``dmam_release``);
    None when the kernel's devres types are not in the debug info. Buffers from plain
    ``dma_alloc_coherent`` are not recorded per device anywhere.

    :param dev: ``struct device *``
    """
    try:
        release = prog.symbol("dmam_release").address
        devres_t = prog.type("struct devres")
        dma_devres_p = prog.pointer_type(prog.type("struct dma_devres"))
    except LookupError:
        return None
    from dumpkit.target.walk import bounded_list

    out = []
    for node in bounded_list(dev.devres_head.address_of_(), "struct devres_node", "entry",
                             "a device's managed resources", MAX_DEVRES):
        if node.release.value_() != release:
            continue
        dr = drgn.container_of(node, devres_t, "node")
        res = drgn.cast(dma_devres_p, dr.data.address_of_())
        out.append((res.dma_handle.value_(), res.size.value_()))
    return out


def generic_evidence(prog: drgn.Program, pdev: drgn.Object, mappings: Mappings = None) -> str:
    """One paragraph on a PCI function no ring decoder knows.

    :param pdev: ``struct pci_dev *``
    :param mappings: the writable byte count of each IOMMU mapping the dump holds for
        the device: a list, or a callable given ``pdev`` that returns one; None when the
        caller has not looked (an empty list means none were found)
    """
    from dumpkit.rings import decoder_for  # the registry imports the decoders, which import this module

    driver = device_driver_name(pdev.dev)
    decoder = decoder_for(driver) if driver else None
    parts = [("no driver bound" if not driver else f"no ring decoder for driver {driver}" if decoder is None
              else f"driver {driver} (ring decoder {decoder.name} {decoder.version}; this summary is what any "
                   "device shows)")]
    try:
        dma_mask = pdev.dma_mask.value_()
        coherent = pdev.dev.coherent_dma_mask.value_()
        parts.append(f"DMA mask {_mask_text(dma_mask)}, coherent {_mask_text(coherent)}")
    except (AttributeError, LookupError, drgn.FaultError):
        parts.append("DMA masks unreadable")
    try:
        master = bool(pdev.is_busmaster.value_())
        enabled = pdev.enable_cnt.counter.value_()
        parts.append(("bus mastering enabled by the kernel" if master else "bus mastering not enabled by the kernel")
                     + f" (enable count {enabled})")
    except (AttributeError, LookupError, drgn.FaultError):
        pass
    try:
        managed = managed_coherent(prog, pdev.dev.address_of_())
    except (LookupError, ValueError, drgn.FaultError):
        managed = None
    if managed:
        parts.append(f"{len(managed)} managed coherent DMA allocation(s), {sum(n for _a, n in managed)} bytes")
    elif managed is not None and driver:
        parts.append("no managed coherent DMA allocation")
    if callable(mappings):
        mappings = mappings(pdev)
    if mappings is None:
        parts.append("IOMMU mappings not examined")
    else:
        sizes = [n for n in mappings if n > 0]
        parts.append(f"{len(sizes)} writable IOMMU mapping(s), {sum(sizes)} bytes" if sizes
                     else "no writable IOMMU mapping")
    known = "; ".join(parts)
    unknown = ("not known from memory: which of those buffers the driver handed the device, the coherent DMA "
               "buffers it allocated without the managed API (the kernel keeps no per-device list of them), and "
               "whether the device completed anything after the crash" if driver else
               "without a driver the kernel gave the device no buffers; a device that was programmed before "
               "(firmware, an earlier kernel) is not visible in memory")
    return f"{known}. {unknown[0].upper()}{unknown[1:]}."


def sg_dma_addresses(sgl: drgn.Object, nents: int, limit: int = MAX_SG, what: str = "scatterlist") -> list[int]:
    """Device addresses of a mapped scatterlist (``struct scatterlist *``), following
    chain entries, skipping entries the DMA mapping left unused (zero length or
    DMA_MAPPING_ERROR, as an IOMMU that merged segments leaves them).

    :param what: whose scatterlist it is, for the record of objects read ("ata1 tag 3")
    """
    out: list[int] = []
    has_len = has_member(sgl.prog_, "struct scatterlist", "dma_length")
    sg, seen = sgl, 0
    total = min(nents, limit)
    entry_size = drgn.sizeof(sgl.type_.type)
    # a chunk ends at its chain entry; none is longer than a page (SG_MAX_SINGLE_ALLOC)
    chunk = max(1, PAGE_SIZE // entry_size)
    reads(f"struct scatterlist[] of {what}", sgl, min(total - seen, chunk) * entry_size)
    while sg and seen < total:
        link = sg.page_link.value_()
        if link & SG_CHAIN:
            sg = drgn.Object(sgl.prog_, sgl.type_, value=link & ~(SG_CHAIN | SG_END))
            reads(f"struct scatterlist[] of {what} (chained)", sg, min(total - seen, chunk) * entry_size)
            continue
        addr = sg.dma_address.value_()
        length = sg.dma_length.value_() if has_len else sg.length.value_()
        if length and addr != DMA_MAPPING_ERROR:
            out.append(addr)
        seen += 1
        if link & SG_END:
            break
        sg = sg + 1
    return out


def scsi_data_dma(scmd: drgn.Object) -> list[int]:
    """Device addresses of a SCSI command's data buffers (``struct scsi_cmnd *``)."""
    if not scmd:
        return []
    reads("struct scsi_cmnd", scmd)
    if has_member(scmd.prog_, "struct scsi_cmnd", "sdb"):
        table = scmd.sdb.table
    else:
        return []
    if not table.sgl:
        return []
    return sg_dma_addresses(table.sgl, table.nents.value_(), what=f"the struct scsi_cmnd at {scmd.value_():#x}")
