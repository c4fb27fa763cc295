"""DMA aliases on a real dump: a conventional PCI NIC (e1000) behind a PCIe-to-PCI bridge
sends its DMA with the bridge's requester id (secondary bus, devfn 00.0; PCIe-to-PCI
bridge spec 2.3, QEMU's pci_device_iommu_address_space(), the kernel's
pci_for_each_dma_alias()). After the crash the capture kernel, which could not copy the
crashed kernel's VT-d tables, logs that NIC's faults under the alias, a function that
does not exist. Checked against the guest's sysfs and QEMU's trace of every fault, with
the device found by driver and the alias derived from the topology, never by BDF."""

from __future__ import annotations

import json
import lzma
import re
from functools import cache

import dumpkit
from conftest import cached_samples, needs_cached
from dumpkit.iommu.collect import collect_iommu
from dumpkit.iommu.faults import parse_log
from dumpkit.verdict import judge

SCENARIO = "distro-bridge-fault"
ROOT = cached_samples(SCENARIO)
pytestmark = needs_cached(SCENARIO, ROOT)


@cache
def case():
    d = ROOT / SCENARIO
    dump = dumpkit.open(d / "vmcore.kdump")
    truth = json.loads((d / "ground-truth" / "pci.json").read_text())["devices"]
    nic = next(b for b, t in truth.items() if t["driver"] == "e1000")
    bridge = next(a for a in dump.pci().ancestors(nic))            # the NIC's upstream bridge
    secondary = int(nic.split(":")[1], 16)
    alias = f"{nic[:4]}:{secondary:02x}:00.0"
    return dump, truth, nic, bridge, alias


def test_the_nic_sits_behind_a_pcie_to_pci_bridge_off_function_zero():
    dump, truth, nic, bridge, alias = case()
    assert truth[bridge.bdf]["class"] >> 8 == 0x0604 and alias != nic and alias not in truth
    assert dump.pci().get(nic).driver == "e1000"


def test_qemu_and_the_capture_log_saw_faults_under_the_alias_only():
    _dump, _truth, nic, _bridge, alias = case()
    sid = int(alias[5:7], 16) << 8
    with lzma.open(ROOT / SCENARIO / "qemu-trace.log.xz", "rt") as f:
        sids = {int(s, 16) for s in re.findall(r"vtd_dmar_fault sid 0x([0-9a-f]+)", f.read())}
    nic_sid = int(nic[5:7], 16) << 8 | int(nic[8:10], 16) << 3 | int(nic[11])
    assert sid in sids and nic_sid not in sids
    logged = [f for f in parse_log((ROOT / SCENARIO / "capture-dmesg.txt").read_text()) if f.kind == "dma-remap"]
    assert any(f.requester == alias[5:] for f in logged)


def test_crashed_kernel_mapped_the_alias_to_the_nics_domain():
    """The kernel gives the alias a context entry of its own, pointing at the NIC's
    domain (domain_context_mapping() over pci_for_each_dma_alias())."""
    dump, _truth, nic, _bridge, alias = case()
    state = collect_iommu(dump)
    own, via = state.entry(nic), state.entry(alias)
    assert own is not None and via is not None
    assert (via.domain_id, via.page_table) == (own.domain_id, own.page_table)


def test_faults_under_the_alias_land_on_the_nic():
    dump, _truth, nic, bridge, alias = case()
    log = ROOT / SCENARIO / "capture-dmesg.txt"
    state = collect_iommu(dump, faults=parse_log(log.read_text(), log.name), log_sources=[str(log)])
    mine = [c for c in state.correlations if c.fault.requester == alias[5:]]
    assert mine and all(c.devices == [nic] and c.buffer and "alias" in c.note for c in mine)
    assert all(c.buffer.startswith("e1000 ") for c in mine)
    v = judge(dump, [log]).get(nic)
    assert v.hit_capture_kernel.value is True and v.faults == len(mine)
    assert any(alias in e and bridge.bdf in e for e in v.hit_capture_kernel.evidence)


def test_a_device_whose_faults_went_unlogged_is_not_cleared():
    """The alias's faults filled the capture kernel's log (rate limit, fault-record
    overflow); QEMU faulted the other NIC's DMA too, but none of it was printed. Its hit
    is unknown, never "no"."""
    dump, truth, _nic, _bridge, _alias = case()
    other = next(b for b, t in truth.items() if t["driver"] == "e1000e")
    sid = int(other[5:7], 16) << 8 | int(other[8:10], 16) << 3 | int(other[11])
    with lzma.open(ROOT / SCENARIO / "qemu-trace.log.xz", "rt") as f:
        sids = {int(s, 16) for s in re.findall(r"vtd_dmar_fault sid 0x([0-9a-f]+)", f.read())}
    log = ROOT / SCENARIO / "capture-dmesg.txt"
    logged = {f.requester for f in parse_log(log.read_text()) if f.kind == "dma-remap"}
    v = judge(dump, [log]).get(other)
    assert sid in sids and other[5:] not in logged
    assert v.did_dma_after_crash.value is True and v.hit_capture_kernel.value is None
    assert "lost fault records" in str(v.hit_capture_kernel)
