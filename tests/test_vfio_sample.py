"""The sample factory's VFIO scenarios (vfio-copied, vfio-nocopy-fault, vfio-vm-fault, and
vfio-nvme-fault, whose device is the NVMe controller): what the generator
defines, how it reads QEMU's trace, and the records of the generated scenarios in the cache
(run.json, the userspace driver's ground-truth/vfio.json, the capture log) against each
other. The dumps themselves are tests/test_vfio.py's."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import load_generator

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
SCENARIOS = ("vfio-copied", "vfio-nocopy-fault", "vfio-vm-fault", "vfio-nvme-fault")
NIC_SCENARIOS = SCENARIOS[:3]
PAGE = 4096


GEN = load_generator()


def _cached() -> dict[str, Path]:
    """Each VFIO scenario's newest generated directory of the stock series setup makes them
    for (conftest.cached_samples)."""
    from conftest import cached_samples

    return {sc: root / sc for sc in SCENARIOS if (root := cached_samples(sc)) is not None}


CACHED = _cached()


def scenario_dir(name: str) -> Path:
    if name not in CACHED:
        pytest.skip(f"no {name} in the cache: sample-dumps/generate --scenario vfio (scripts/setup does)")
    return CACHED[name]


def test_the_generator_defines_the_scenarios():
    assert GEN.SCENARIO_GROUPS["vfio"] == list(SCENARIOS)
    copied, fault, vm, nvme = (GEN.SCENARIOS[n] for n in SCENARIOS)
    assert copied.distro and fault.distro and copied.vfio == "big" and fault.vfio == "rx"
    assert not copied.expects_fault and fault.expects_fault and vm.expects_fault
    # kvm_amd loads only on an AMD-vendor CPU (TCG emulates SVM); the others keep "max"
    assert vm.vfio == "vm" and "vendor=AuthenticAMD" in vm.cpu and copied.cpu == fault.cpu == "max"
    assert copied.guest_ram == "3G" and "sp_off" in copied.first_iommu
    assert not set(SCENARIOS) & set(GEN.SCENARIO_GROUPS["distro"])
    for sc in (copied, fault, vm):
        events = {GEN.CANONICAL_EVENTS.get(e, e) for e in GEN.trace_events(sc)}
        assert {"e1000e_rx_descr", "e1000e_rx_desc_buff_write", "e1000e_rx_written_to_guest"} <= events
    # the NVMe: no stream, a fault scenario, its reads, completions and refused writes traced
    assert nvme.vfio == "nvme" and nvme.expects_fault and not nvme.traffic and nvme.distro
    events = {GEN.CANONICAL_EVENTS.get(e, e) for e in GEN.trace_events(nvme)}
    assert {"pci_nvme_map_addr", "pci_nvme_enqueue_req_completion", "pci_nvme_err_addr_write"} <= events


def test_trace_phases_of_the_nvme_dma():
    """Lines as QEMU 7.2 wrote them in a vfio-nvme-fault run: the kernel's own queue 1 before
    the driver's first read is not the driver's; refused writes are kept by phase."""
    sc = GEN.SCENARIOS["vfio-nvme-fault"]
    truth = {"pid": 1, "comm": "vfio-rx", "bdf": "0000:03:00.0", "iommu_group": 11, "container": "type1v2",
             "device": "nvme", "mappings": [{"iova": 0x10000000, "size": 0x40000, "phys": [[0x1000000, 0x40000]]}],
             "ring": None,
             "nvme": {"sq_iova": 0x10010000, "cq_iova": 0x10020000, "cqid": 1, "entries": 1024,
                      "data_iova": 0x20000000, "read_size": 4096, "submitted": 1039, "completed": 16,
                      "outstanding": 1023}}
    lines = [
        (99.0, "pci_nvme_enqueue_req_completion cid 7 cqid 1 dw0 0x0 dw1 0x0 status 0x0"),   # the kernel's
        (99.5, "pci_nvme_map_addr addr 0xfffff000 len 4096"),                                 # the kernel's
        (100.0, "pci_nvme_map_addr addr 0x20000000 len 4096"),
        (100.2, "pci_nvme_enqueue_req_completion cid 0 cqid 1 dw0 0x0 dw1 0x0 status 0x0"),
        (100.3, "pci_nvme_enqueue_req_completion cid 2 cqid 0 dw0 0x0 dw1 0x0 status 0x0"),   # admin queue
        (102.5, "pci_nvme_enqueue_req_completion cid 1 cqid 1 dw0 0x0 dw1 0x0 status 0x0"),
        (103.0, "vtd_dmar_fault sid 0x300 fault 5 addr 0x10020828 write 1"),
        (103.0, "pci_nvme_err_addr_write addr 0x10020820"),
        (103.0, "pci_nvme_err_cfs controller fatal status"),
        (106.0, "pci_nvme_enqueue_req_completion cid 3 cqid 1 dw0 0x0 dw1 0x0 status 0x0"),
    ]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vfio-nvme-trace-{os.getpid()}.log"
    path.write_text("".join(f"10260@{t:.6f}:{text}\n" for t, text in lines))
    try:
        v = GEN.vfio_facts(sc, truth, path, {"crash_epoch": 101.0, "capture_done_epoch": 105.0})
    finally:
        path.unlink()
    c = v["traced_nvme_dma"]
    assert (c["reads_before_crash"], c["completions_before_crash"]) == (1, 1)
    assert (c["completions_after_crash"], c["completions_after_capture_done"]) == (1, 1)
    assert v["nvme_write_refused"] == {"before_crash": [], "after_crash": ["0x10020820"], "after_capture_done": []}
    assert v["last_completion_after_crash_s"] == 1.5 and v["ring"] is None and v["device"] == "nvme"


def test_trace_phases_of_the_ring_dma():
    sc = GEN.SCENARIOS["vfio-nocopy-fault"]
    truth = {"pid": 1, "comm": "vfio-rx", "bdf": "0000:02:00.0", "iommu_group": 10, "container": "type1v2",
             "mappings": [{"iova": 0x10000000, "size": 0x810000, "phys": [[0x1000000, 0x810000]]}],
             "ring": {"iova": 0x10000000, "buffers_iova": 0x10010000, "descriptors": 4096, "buffer_size": 2048,
                      "rdh": 1, "rdt": 0, "received": 1}}
    lines = [
        (99.0, "e1000e_rx_desc_buff_write buffer #0, addr: 0x3f000000, offset: 0, from: 0x1, length: 966"),
        (100.5, "e1000e_rx_descr Next RX descriptor: ring #0, PA: 0x10000010, length: 16"),
        (100.5, "e1000e_rx_desc_buff_write buffer #0, addr: 0x10010800, offset: 0, from: 0x1, length: 966"),
        (102.0, "e1000e_rx_desc_buff_write buffer #0, addr: 0x10011000, offset: 0, from: 0x1, length: 966"),
        (110.0, "e1000e_rx_descr Next RX descriptor: ring #0, PA: 0x10000030, length: 16"),
    ]
    trace = "".join(f"1@{t:.6f}:{text}\n" for t, text in lines)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vfio-trace-{os.getpid()}.log"
    path.write_text(trace)
    try:
        v = GEN.vfio_facts(sc, truth, path, {"crash_epoch": 101.0, "capture_done_epoch": 105.0})
    finally:
        path.unlink()
    c = v["traced_rx_dma"]
    assert c["outside_the_ring_before_crash"] == 1 and c["buffer_writes_before_crash"] == 1
    assert c["buffer_writes_after_crash"] == 1 and c["descriptor_fetches_after_capture_done"] == 1
    assert v["last_buffer_write_after_crash_s"] == 1.0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc (build-essential)")
def test_the_userspace_driver_builds_static(tmp_path):
    binary = GEN.build_vfio_rx(tmp_path / "vfio-rx")
    head = binary.read_bytes()[:64]
    assert head[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in binary.read_bytes()      # no interpreter: static


@pytest.mark.parametrize("name", SCENARIOS)
def test_run_json_names_the_owner_and_the_mechanism(name):
    d = scenario_dir(name)
    run = json.loads((d / "run.json").read_text())
    truth = json.loads((d / "ground-truth" / "vfio.json").read_text())
    assert run["dma_owner"] == GEN.VFIO_DMA_OWNER[GEN.SCENARIOS[name].vfio]
    assert run["dma_owner"].startswith({"vfio-vm-fault": "KVM virtual machine",
                                        "vfio-nvme-fault": "userspace NVMe driver"}.get(name, "userspace driver"))
    assert run["capture_path"]["format"] == "kdump-compressed"
    v = run["vfio"]
    assert (v["pid"], v["comm"], v["bdf"]) == (truth["pid"], truth["comm"], truth["bdf"])
    if v.get("device") == "nvme":
        assert v["traced_nvme_dma"]["completions_before_crash"] > 0
        assert v["traced_nvme_dma"]["completions_after_crash"] > 0
    else:
        assert v["traced_rx_dma"]["buffer_writes_before_crash"] > 0
        assert v["traced_rx_dma"]["buffer_writes_after_crash"] > 0
    assert GEN.mechanism_problems(GEN.SCENARIOS[name], d) == []


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_driver_s_record_is_self_consistent(name):
    d = scenario_dir(name)
    t = json.loads((d / "ground-truth" / "vfio.json").read_text())
    pci = json.loads((d / "ground-truth" / "pci.json").read_text())["devices"][t["bdf"]]
    assert pci["driver"] == "vfio-pci" and pci["iommu_group"] == t["iommu_group"] and pci["bus_master"]
    assert pci.get("driver_override", "vfio-pci") == "vfio-pci"
    assert t["container"] == "type1v2" and t["comm"] == "vfio-rx"
    for m in t["mappings"]:
        assert m["prot"] == "rw" and m["iova"] % PAGE == 0 and m["size"] % PAGE == 0
        assert sum(n for _p, n in m["phys"]) == m["size"]
        assert all(p % PAGE == 0 and n % PAGE == 0 and n > 0 for p, n in m["phys"])
        assert any(lo <= m["iova"] and m["iova"] + m["size"] - 1 <= hi for lo, hi in t["iova_ranges"])
        assert not m["iova"] <= 0xFEE00000 < m["iova"] + m["size"]
    if t.get("vm"):
        # the VM's one slot of guest RAM is the one mapping, at IOVA = guest-physical address
        (m,) = t["mappings"]
        vm = t["vm"]
        assert (vm["guest_ram_gpa"], vm["guest_ram_size"], vm["guest_ram_hva"]) == (m["iova"], m["size"], m["vaddr"])
        assert vm["vmm_pid"] == t["pid"] and vm["mmio_exits"] > 0 and vm["hlt_exits"] > 0
    if t.get("device") == "nvme":
        nv = t["nvme"]
        assert t["ring"] is None and nv["completed"] > 0 and nv["outstanding"] == nv["entries"] - 1
        assert nv["submitted"] == nv["completed"] + nv["outstanding"]
        # each queue and the read buffers inside one mapping
        for lo, n in ((nv["asq_iova"], nv["admin_entries"] * 64), (nv["acq_iova"], nv["admin_entries"] * 16),
                      (nv["sq_iova"], nv["entries"] * 64), (nv["cq_iova"], nv["entries"] * 16),
                      (nv["data_iova"], nv["outstanding"] * nv["read_size"])):
            assert any(m["iova"] <= lo and lo + n <= m["iova"] + m["size"] for m in t["mappings"]), hex(lo)
    else:
        ring = t["ring"]
        assert ring["received"] > 0 and 0 <= ring["rdh"] < ring["descriptors"]
        assert any(m["iova"] <= ring["iova"] and ring["buffers_iova"] + ring["descriptors"] * ring["buffer_size"]
                   <= m["iova"] + m["size"] for m in t["mappings"])
    # each mapping inside one writable area of the process (the kernel merges adjacent
    # anonymous areas of the same flags: the NVMe's two mappings are one area)
    areas = [(int(lo, 16), int(hi, 16), perms) for lo, hi, perms in
             re.findall(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", (d / "ground-truth" / "vfio-rx-maps.txt").read_text(), re.M)]
    for m in t["mappings"]:
        assert any(lo <= m["vaddr"] and m["vaddr"] + m["size"] <= hi and perms.startswith("rw")
                   for lo, hi, perms in areas), hex(m["vaddr"])


def test_copied_keeps_a_gigabyte_in_4k_pages_and_copies_the_tables():
    d = scenario_dir("vfio-copied")
    t = json.loads((d / "ground-truth" / "vfio.json").read_text())
    big = [m for m in t["mappings"] if m["size"] >= 1 << 30]
    assert big and big[0]["size"] // PAGE >= 262144
    assert "sp_off" in (d / "ground-truth" / "cmdline.txt").read_text()
    log = (d / "capture-dmesg.txt").read_text(errors="replace")
    assert "Copied translation tables from previous kernel" in log
    assert not GEN.DMAR_FAULT_LINE.search(log)


def test_nocopy_faults_at_the_owner_s_iovas():
    d = scenario_dir("vfio-nocopy-fault")
    t = json.loads((d / "ground-truth" / "vfio.json").read_text())
    log = (d / "capture-dmesg.txt").read_text(errors="replace")
    assert "Failed to copy translation tables from previous kernel" in log
    faults = [(dev, int(a, 16)) for dev, a in GEN.DMAR_FAULT_LINE.findall(log)]
    mine = [a for dev, a in faults if dev == t["bdf"][-7:]]
    assert mine and all(any(m["iova"] <= a < m["iova"] + m["size"] for m in t["mappings"]) for a in mine)


def test_nvme_faults_at_the_owner_s_completion_queue():
    """The NVMe's capture-kernel faults are its completion entries: the log's fault pages
    hold the driver's completion queue, and QEMU refused each write there after the crash."""
    d = scenario_dir("vfio-nvme-fault")
    t = json.loads((d / "ground-truth" / "vfio.json").read_text())
    run = json.loads((d / "run.json").read_text())
    nv = t["nvme"]
    cq = (nv["cq_iova"], nv["cq_iova"] + nv["entries"] * 16)
    log = (d / "capture-dmesg.txt").read_text(errors="replace")
    assert "Failed to copy translation tables from previous kernel" in log
    mine = [int(a, 16) for dev, a in GEN.DMAR_FAULT_LINE.findall(log) if dev == t["bdf"][-7:]]
    assert mine and all(cq[0] & ~0xFFF <= a < cq[1] for a in mine), [hex(a) for a in mine]
    refused = run["vfio"]["nvme_write_refused"]
    assert refused["after_crash"] and not refused["before_crash"]
    assert all(cq[0] <= int(a, 16) < cq[1] for a in refused["after_crash"])
    assert {int(a, 16) & ~0xFFF for a in refused["after_crash"]} >= set(mine)
