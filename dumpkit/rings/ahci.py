"""ahci: per port, commands the kernel still counts as issued (``ata_port.qc_active``)
whose completion the HBA already wrote into host memory.

What memory can show. The HBA's view of the command slots (PxCI, PxSACT) lives in its
registers, not in the dump; the kernel reads them in its interrupt handler and keeps
only its own bitmap of the commands it issued and has not completed (``qc_active``).
What the HBA writes to memory per port is the received-FIS area and the command list:

* NCQ commands complete with a Set Device Bits FIS whose SActive field has the bits of
  the tags that finished (offset 0x58). The area holds only the *last* such FIS: two NCQ
  completions after the crash show as the second one, so the count is a lower bound;
  and a tag the kernel completed and issued again before the crash, with no NCQ
  completion since, still shows its old bit, so a set bit is "completed at or after the
  kernel last issued that tag" only when it is the last completion on the port.
* Non-NCQ DMA and PIO commands: the HBA adds the bytes it moved to the command header's
  PRD byte count (PRDBC), which the kernel zeroes when it issues the command; a count
  reaching the command's length means the data phase ended. The D2H register FIS
  (offset 0x40) holds the last such command's status.

So the evidence is per port: commands in ``qc_active`` the FIS area or PRDBC mark as
done. Port multipliers with FIS-based switching keep one FIS area per device: only
device 0's is read."""

from __future__ import annotations

import struct

import drgn

from dumpkit.kernel import driver_data, has_member
from dumpkit.rings.base import DmaBuffer, QueueEvidence, RingDecoder, reads
from dumpkit.rings.generic import sg_dma_addresses

__all__ = ["decode_ahci", "ahci_ports", "ahci_buffers", "DECODER"]

AHCI_MAX_CMDS = 32
AHCI_CMD_SZ = 32            # struct ahci_cmd_hdr: opts, status (PRDBC), tbl_addr, tbl_addr_hi, reserved[4]
AHCI_RX_FIS_SZ = 256
AHCI_CMD_TBL_SZ = 0x80 + 168 * 16  # AHCI_CMD_TBL_HDR_SZ + AHCI_MAX_SG * 16
RX_FIS_D2H_REG, RX_FIS_SDB = 0x40, 0x58
FIS_TYPE_REG_D2H, FIS_TYPE_SDB = 0x34, 0xA1
ATA_PROT_FLAG_PIO, ATA_PROT_FLAG_DMA, ATA_PROT_FLAG_NCQ = 1, 2, 4
ATA_QCFLAG_ACTIVE = 1
ATA_MAX_QUEUE = 32          # ATA_TAG_INTERNAL
MAX_PORTS = 32


def ahci_ports(prog: drgn.Program, pdev: drgn.Object) -> list[tuple[drgn.Object, drgn.Object]]:
    """(ata_port *, ahci_port_priv *) of every started port (the ata_host is the PCI
    function's driver data)."""
    host = driver_data(pdev.dev, "struct ata_host *")
    if not host:
        return []
    reads("struct ata_host", host)
    n = min(host.n_ports.value_(), MAX_PORTS)
    # ports[] is a flexible array after the struct
    reads("ahci host ports[] (struct ata_port *[])", host.ports.address_, n * drgn.sizeof(host.ports.type_.type))
    out = []
    for i in range(n):
        ap = host.ports[i]
        if not ap:
            continue
        reads(f"struct ata_port {i}", ap)
        if not ap.private_data:
            continue
        pp = drgn.cast("struct ahci_port_priv *", ap.private_data)
        reads(f"struct ahci_port_priv {i}", pp)
        if pp.cmd_slot and pp.rx_fis:
            out.append((ap, pp))
    return out


def _hw_tag(qc: drgn.Object, tag: int) -> int:
    # 6.1 keeps the tag sent to the device apart (the internal command uses slot 0)
    if has_member(qc.prog_, "struct ata_queued_cmd", "hw_tag"):
        return qc.hw_tag.value_()
    return 0 if tag == ATA_MAX_QUEUE else tag


def _port(prog: drgn.Program, ap: drgn.Object, pp: drgn.Object) -> QueueEvidence:
    active = ap.qc_active.value_()
    port = ap.port_no.value_()
    # both areas share one allocation: each is recorded just before it is read, so a
    # fault is put on the one being read
    reads(f"ahci port {port} received FIS area", pp.rx_fis.value_(), AHCI_RX_FIS_SZ)
    rx = prog.read(pp.rx_fis.value_(), AHCI_RX_FIS_SZ)
    reads(f"ahci port {port} command list", pp.cmd_slot.value_(), AHCI_MAX_CMDS * AHCI_CMD_SZ)
    slots = prog.read(pp.cmd_slot.value_(), AHCI_MAX_CMDS * AHCI_CMD_SZ)
    sdb_done = struct.unpack_from("<I", rx, RX_FIS_SDB + 4)[0] if rx[RX_FIS_SDB] == FIS_TYPE_SDB else 0
    n, addrs, issued = 0, [], 0
    for tag in range(ATA_MAX_QUEUE + 1):
        if not (active >> tag) & 1:
            continue
        qc = ap.qcmd[tag]
        if not qc.flags.value_() & ATA_QCFLAG_ACTIVE:
            continue
        issued += 1
        hw = _hw_tag(qc, tag)
        if not 0 <= hw < AHCI_MAX_CMDS:
            continue
        prot = qc.tf.protocol.value_()
        if prot & ATA_PROT_FLAG_NCQ:
            done = bool((sdb_done >> hw) & 1)
        elif prot & (ATA_PROT_FLAG_DMA | ATA_PROT_FLAG_PIO):
            prdbc, = struct.unpack_from("<I", slots, hw * AHCI_CMD_SZ + 4)
            nbytes = qc.nbytes.value_()
            done = nbytes > 0 and prdbc >= nbytes
        else:
            done = False  # no data phase: only the HBA's registers would tell
        if done:
            n += 1
            if qc.sg and qc.n_elem.value_():
                what = f"ata{ap.print_id.value_()} tag {tag}"
                addrs.extend(sg_dma_addresses(qc.sg, qc.n_elem.value_(), what=what))
    name = f"ata{ap.print_id.value_()} port {port} ({issued} issued)"
    return QueueEvidence(name, AHCI_MAX_CMDS, n, None, None, addrs)


def decode_ahci(prog: drgn.Program, pdev: drgn.Object) -> list[QueueEvidence]:
    return [_port(prog, ap, pp) for ap, pp in ahci_ports(prog, pdev)]


def ahci_buffers(prog: drgn.Program, pdev: drgn.Object) -> list[DmaBuffer]:
    """Each port's command list, command tables and received-FIS area."""
    out = []
    for ap, pp in ahci_ports(prog, pdev):
        port = ap.port_no.value_()
        fis_sz = AHCI_RX_FIS_SZ * (16 if pp.fbs_enabled else 1)
        out.append(DmaBuffer(f"ahci port {port} command list", pp.cmd_slot_dma.value_(), AHCI_MAX_CMDS * AHCI_CMD_SZ))
        if pp.cmd_tbl:
            out.append(DmaBuffer(f"ahci port {port} command tables", pp.cmd_tbl_dma.value_(),
                                 AHCI_MAX_CMDS * AHCI_CMD_TBL_SZ))
        out.append(DmaBuffer(f"ahci port {port} received FIS area", pp.rx_fis_dma.value_(), fis_sz))
    return out


# struct ahci_port_priv is defined in drivers/ata/ahci.h (modules ahci and libahci),
# struct ata_port and ata_queued_cmd in include/linux/libata.h (module libata)
DECODER = RingDecoder("ahci", "1", ("ahci",), ("ahci", "libahci", "libata"), decode_ahci, ahci_buffers)
