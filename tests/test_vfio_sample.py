"""The sample factory's VFIO scenarios (vfio-copied, vfio-nocopy-fault, vfio-vm-fault): what the generator
defines, how it reads QEMU's trace, and the records of the generated scenarios in the cache
(run.json, the userspace driver's ground-truth/vfio.json, the capture log) against each
other. The dumps themselves are tests/test_vfio.py's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import load_generator

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
SCENARIOS = ("vfio-copied", "vfio-nocopy-fault", "vfio-vm-fault")
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
    copied, fault, vm = (GEN.SCENARIOS[n] for n in SCENARIOS)
    assert copied.distro and fault.distro and copied.vfio == "big" and fault.vfio == "rx"
    assert not copied.expects_fault and fault.expects_fault and vm.expects_fault
    # kvm_amd loads only on an AMD-vendor CPU (TCG emulates SVM); the others keep "max"
    assert vm.vfio == "vm" and "vendor=AuthenticAMD" in vm.cpu and copied.cpu == fault.cpu == "max"
    assert copied.guest_ram == "3G" and "sp_off" in copied.first_iommu
    assert not set(SCENARIOS) & set(GEN.SCENARIO_GROUPS["distro"])
    for sc in (copied, fault, vm):
        events = {GEN.CANONICAL_EVENTS.get(e, e) for e in GEN.trace_events(sc)}
        assert {"e1000e_rx_descr", "e1000e_rx_desc_buff_write", "e1000e_rx_written_to_guest"} <= events


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
    assert run["dma_owner"].startswith("KVM virtual machine" if name == "vfio-vm-fault" else "userspace driver")
    assert run["capture_path"]["format"] == "kdump-compressed"
    v = run["vfio"]
    assert (v["pid"], v["comm"], v["bdf"]) == (truth["pid"], truth["comm"], truth["bdf"])
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
    assert t["ring"]["received"] > 0 and 0 <= t["ring"]["rdh"] < t["ring"]["descriptors"]
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
    ring = t["ring"]
    assert any(m["iova"] <= ring["iova"] and ring["buffers_iova"] + ring["descriptors"] * ring["buffer_size"]
               <= m["iova"] + m["size"] for m in t["mappings"])
    maps = (d / "ground-truth" / "vfio-rx-maps.txt").read_text()
    for m in t["mappings"]:
        assert f"{m['vaddr']:x}-{m['vaddr'] + m['size']:x} " in maps


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
