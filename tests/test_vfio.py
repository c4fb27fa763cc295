"""Functions owned by a userspace driver through vfio-pci (the VFIO scenarios scripts/setup
generates): owner, IOVA ranges and their physical pages against what the driver itself
recorded inside the guest (its /proc/self/pagemap), the container's records against the
IOMMU walk, and the claims: never "could not DMA" for a device its owner was driving,
faults in the capture kernel resolved to the owner's buffer. Devices are found by driver,
never by BDF."""

from __future__ import annotations

import bisect
import json
import os
import re
from pathlib import Path

import pytest

import dumpkit
from conftest import run_cli
from dumpkit.verdict import judge
from dumpkit.vfio.check import compare_with_walk
from dumpkit.vfio.kvm import VmSlot
from dumpkit.vfio.model import VfioMapping, VfioOwner

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
# cases: a scenario, and after "@" a series other than the primary one
SCENARIOS = ("vfio-copied", "vfio-nocopy-fault", "vfio-vm-fault", "vfio-nvme-fault", "vfio-iommufd-fault",
             "vfio-iommufd-fault@7.2", "vfio-nocopy-fault@7.x")
# the iommufd scenario runs our own 6.12 and 7.2 kernels (Debian's are built without
# IOMMUFD): their releases are "6.12.N" and "7.2.N", not trixie's "6.12.N+deb13-amd64" and
# sid's "7.2.N+deb14-amd64" (7.2's iommufd attaches page tables per PASID); 7.x dumps at
# -d 23, which keeps the owner's user pages; the others the primary stock series
SERIES = {"vfio-iommufd-fault": re.compile(r"6\.12\.\d+$"), "vfio-iommufd-fault@7.2": re.compile(r"7\.2\.\d+$"),
          "vfio-nocopy-fault@7.x": re.compile(r"7\.")}
FAULT_SCENARIOS = ("vfio-nocopy-fault", "vfio-nvme-fault", "vfio-iommufd-fault", "vfio-iommufd-fault@7.2",
                   "vfio-nocopy-fault@7.x")


def _name(case: str) -> str:
    return case.split("@")[0]


def _roots() -> dict[str, Path]:
    """Each VFIO scenario's newest generated directory of the series setup makes it for
    (conftest.cached_samples)."""
    from conftest import PRIMARY_SERIES, cached_samples

    return {sc: root for sc in SCENARIOS
            if (root := cached_samples(_name(sc), SERIES.get(sc, PRIMARY_SERIES))) is not None}


ROOTS = _roots()
if os.environ.get("CI") and set(ROOTS) != set(SCENARIOS):
    raise RuntimeError(f"VFIO samples missing under {CACHE / 'samples'}: scripts/setup generates them")
_OPEN: dict = {}


def _kernel(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["kernel"]


def opened(scenario: str):
    if scenario not in ROOTS:
        pytest.skip(f"no {scenario} sample in the cache: run scripts/setup")
    if scenario not in _OPEN:
        root = ROOTS[scenario]
        d = root / _name(scenario)
        run = json.loads((d / "run.json").read_text())
        vmcore = d / run.get("capture_path", {}).get("files", {}).get("vmcore", "vmcore.kdump")
        if not vmcore.exists():
            vmcore = next(d.rglob("*vmcore*"))
        kernel = _kernel(root)
        debug = root / (kernel.get("debug_dir") or kernel["debug_file"])
        dump = dumpkit.open(vmcore, debuginfo=[str(debug.resolve())])
        _OPEN[scenario] = (d, dump)
    return _OPEN[scenario]


def truth(scenario: str) -> dict:
    d, _dump = opened(scenario)
    return json.loads(next(d.rglob("vfio.json")).read_text())


def vfio_device(tree):
    owned = [dev for dev in tree if dev.vfio is not None]
    assert len(owned) == 1, [d.bdf for d in owned]
    return owned[0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_owner_equals_the_driver_s_own_record(scenario):
    t = truth(scenario)
    _d, dump = opened(scenario)
    dev = vfio_device(dump.pci())
    owner = dev.vfio
    assert dev.bdf == t["bdf"] and dev.driver == "vfio-pci"
    assert owner.unknown == {}, owner.unknown
    assert owner.is_open and owner.group_id == t["iommu_group"] and owner.group_type == "iommu"
    assert owner.group_domain == "unmanaged" and owner.default_domain in ("DMA", "DMA-FQ")
    assert owner.container == ("iommufd" if t["container"] == "iommufd" else "vfio-iommu-type1 v2")
    assert [(p.pid, p.comm) for p in owner.processes] == [(t["pid"], t["comm"])]
    want = sorted((m["iova"], m["size"], m["vaddr"], "w" in m["prot"]) for m in t["mappings"])
    assert [(m.iova, m.size, m.vaddr, m.write) for m in owner.mappings] == want
    assert owner.memory_enabled is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_iommu_walk_equals_the_owner_s_pages(scenario):
    """Every 4 KiB of every mapping: the IOMMU walk's physical page equals the page the
    driver read from its own pagemap."""
    t = truth(scenario)
    _d, dump = opened(scenario)
    from dumpkit.iommu.collect import collect_iommu

    dev = vfio_device(dump.pci())
    mapping = collect_iommu(dump).mapping(dev.bdf)
    assert mapping is not None and not mapping.errors
    check = compare_with_walk(dev.vfio, mapping.ranges)
    assert check.agrees, check.text()
    ranges = sorted(mapping.ranges, key=lambda r: r.iova)
    starts = [r.iova for r in ranges]
    for m in t["mappings"]:
        iova = m["iova"]
        for phys, length in m["phys"]:
            for off in range(0, length, 4096):
                hit = ranges[bisect.bisect_right(starts, iova + off) - 1]
                assert hit.iova <= iova + off < hit.iova + hit.size, hex(iova + off)
                assert hit.phys + (iova + off - hit.iova) == phys + off, hex(iova + off)
            iova += length
        assert iova == m["iova"] + m["size"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_never_could_not_dma(scenario):
    """The kernel's is_busmaster is off (vfio-pci never sets it); the guest's config space
    had Bus Master on; the claim is "yes, inferred" with the owner named."""
    t = truth(scenario)
    d, dump = opened(scenario)
    gt = json.loads((d / "ground-truth" / "pci.json").read_text())["devices"][t["bdf"]]
    dev = vfio_device(dump.pci())
    assert dev.is_busmaster is False and gt["bus_master"] is True
    e = next(e for e in judge(dump).endpoints if e.bdf == t["bdf"])
    assert e.could_dma.value is True and e.could_dma.basis == "inferred", str(e.could_dma)
    assert f"pid {t['pid']} {t['comm']}" in e.dma_owner
    assert e.did_dma_after_crash.value is not False, str(e.did_dma_after_crash)
    assert any("agree" in x for x in e.could_dma.evidence), e.could_dma.evidence


@pytest.mark.parametrize("scenario", FAULT_SCENARIOS)
def test_capture_faults_resolved_to_the_owner_s_buffer(scenario):
    d, dump = opened(scenario)
    t = truth(scenario)
    v = judge(dump, capture_logs=[str(d / "capture-dmesg.txt")])
    e = next(e for e in v.endpoints if e.bdf == t["bdf"])
    assert e.faults > 0 and e.hit_capture_kernel.word == "faulted"
    assert e.did_dma_after_crash.value is True
    said = [x for x in e.hit_capture_kernel.evidence if x.startswith("IOVA ")]
    assert said and all(f"pid {t['pid']} {t['comm']}'s buffer" in x for x in said), e.hit_capture_kernel.evidence
    for x in said:
        iova = int(x.split()[1], 16)
        assert any(m["iova"] <= iova < m["iova"] + m["size"] for m in t["mappings"]), x


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_did_dma_after_the_crash_says_whether_the_dump_kept_the_owner_s_pages(scenario):
    """Without a capture log the rings decide, and they are the owner's: unknown, saying
    whether the dump kept the owner's pages (the dump level's bit 8) and why even kept
    pages do not give the rings (their base is in the device's registers)."""
    t = truth(scenario)
    _d, dump = opened(scenario)
    e = next(e for e in judge(dump).endpoints if e.bdf == t["bdf"])
    did = e.did_dma_after_crash
    assert did.value is None, str(did)
    level = dump.info.dump_level
    if level is not None and level & 8:
        assert any("not in this dump" in x and f"dump level {level} leaves out user pages" in x
                   for x in did.evidence), did.evidence
    else:
        assert any("its owner's pages are in this dump" in x and "device's registers" in x
                   for x in did.evidence), did.evidence


def test_a_vm_owner_is_the_vm_the_vmm_made():
    """vfio-rx --vm: the device attached to the VM (vfio_device.kvm), the VMM's pid, and the
    VM's one memory slot equal to the guest RAM the VMM gave it."""
    t = truth("vfio-vm-fault")
    _d, dump = opened("vfio-vm-fault")
    owner = vfio_device(dump.pci()).vfio
    vm = t["vm"]
    assert owner.vm and owner.vm_pid == vm["vmm_pid"] == t["pid"]
    assert owner.vm_slots == [VmSlot(0, vm["guest_ram_gpa"], vm["guest_ram_size"], vm["guest_ram_hva"])]
    assert owner.owner_text.startswith(f"a VM (VMM pid {vm['vmm_pid']}")
    assert not any(k.startswith("vm") for k in owner.unknown), owner.unknown


def capture_fault_evidence(scenario: str) -> tuple[dict, list[str]]:
    """The driver's record and the verdict's "IOVA ..." lines for the VFIO-owned function
    of a fault scenario, judged with its capture log: it faulted there and did DMA after
    the crash."""
    d, dump = opened(scenario)
    t = truth(scenario)
    v = judge(dump, capture_logs=[str(d / "capture-dmesg.txt")])
    e = next(e for e in v.endpoints if e.bdf == t["bdf"])
    assert e.faults > 0 and e.hit_capture_kernel.word == "faulted" and e.did_dma_after_crash.value is True
    said = [x for x in e.hit_capture_kernel.evidence if x.startswith("IOVA ")]
    assert said, e.hit_capture_kernel.evidence
    return t, said


def test_a_vm_s_capture_faults_are_named_by_guest_physical_address():
    """The faults of the NIC the VM drove, in the capture kernel: each one's guest-physical
    address from the VM's memslot (the VMM's address the container mapped at that IOVA,
    less the slot's base), equal to the guest-physical address the VM's driver used."""
    t, said = capture_fault_evidence("vfio-vm-fault")
    vm = t["vm"]
    m = t["mappings"][0]
    for x in said:
        iova = int(x.split()[1], 16)
        hva = m["vaddr"] + iova - m["iova"]
        gpa = vm["guest_ram_gpa"] + hva - vm["guest_ram_hva"]
        assert f"= guest-physical {gpa:#x} of the VM (memslot 0;" in x, x
        ring_end = t["ring"]["buffers_iova"] + t["ring"]["descriptors"] * t["ring"]["buffer_size"]
        assert t["ring"]["iova"] <= gpa < ring_end, x


def test_nvme_capture_faults_name_the_owner_s_completion_queue():
    """The NVMe the userspace driver owned: its faults in the capture kernel resolve to the
    driver's completion queue, at the offset of the queue in the mapping and the virtual
    address the driver itself recorded for it."""
    t, said = capture_fault_evidence("vfio-nvme-fault")
    nv = t["nvme"]
    (m,) = [m for m in t["mappings"] if m["iova"] <= nv["cq_iova"] < m["iova"] + m["size"]]
    for x in said:
        iova = int(x.split()[1], 16)
        assert nv["cq_iova"] & ~0xFFF <= iova < nv["cq_iova"] + nv["entries"] * 16, x
        off = iova - m["iova"]
        assert f"= offset {off:#x} of pid {t['pid']} {t['comm']}'s buffer at {m['vaddr']:#x} " \
               f"(address {m['vaddr'] + off:#x})" in x, x


def test_struct_kvm_needs_no_kvm_module_debug_info(tmp_path):
    """The same dump with a debug tree lacking kvm.ko and kvm-amd.ko: the VM's pid and
    memory slots are read all the same (vmlinux's own debug info has struct kvm, which
    code built into the kernel includes), so kvm's debug files are not a requirement."""
    _d, _dump = opened("vfio-vm-fault")
    root = ROOTS["vfio-vm-fault"]
    debug = (root / _kernel(root)["debug_dir"]).resolve()
    for f in debug.rglob("*"):
        if f.is_file() and not f.name.startswith("kvm"):
            (tmp_path / f.relative_to(debug)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f.relative_to(debug)).symlink_to(f)
    dump = dumpkit.open(next((root / "vfio-vm-fault").glob("vmcore*")), debuginfo=[str(tmp_path)])
    with_debug = {m.name for m in dump.prog.modules() if m.debug_file_status.name == "HAVE"}
    assert "vfio" in with_debug and not any(n.startswith("kvm") for n in with_debug), with_debug
    owner = vfio_device(dump.pci()).vfio
    vm = truth("vfio-vm-fault")["vm"]
    assert owner.vm_pid == vm["vmm_pid"] and [s.hva for s in owner.vm_slots] == [vm["guest_ram_hva"]]


def test_cli_shows_the_owner():
    d, _dump = opened("vfio-copied")
    t = truth("vfio-copied")
    root = ROOTS["vfio-copied"]
    vmcore = next(p for p in d.iterdir() if p.name.startswith("vmcore") or p.name.startswith("dump."))
    debug = str((root / _kernel(root)["debug_dir"]).resolve())
    out = run_cli("pci", str(vmcore), "--debuginfo", debug, "-v", "-s", t["bdf"])
    assert out.returncode == 0, out.stderr
    assert f"owner userspace (pid {t['pid']} {t['comm']})" in out.stdout
    js = run_cli("verdict", str(vmcore), "--debuginfo", debug, "--json")
    assert js.returncode == 0, js.stderr
    ep = next(x for x in json.loads(js.stdout)["endpoints"] if x["bdf"] == t["bdf"])
    assert ep["could_dma"] is True and ep["dma_owner"].startswith("vfio-pci: userspace")


# -- the comparison itself, on records that must disagree ------------------------------------

class _R:
    def __init__(self, iova, size, write=True):
        self.iova, self.size, self.write = iova, size, write


def _owner(*maps) -> VfioOwner:
    return VfioOwner("0000:01:00.0", "vfio-pci", open_count=1,
                     mappings=[VfioMapping(i, n, 0x7f0000000000 + i, True, w, None, True, 0) for i, n, w in maps])


def test_compare_finds_each_kind_of_disagreement():
    owner = _owner((0x10000, 0x4000, True), (0x100000, 0x2000, False))
    same = compare_with_walk(owner, [_R(0x10000, 0x1000), _R(0x11000, 0x3000), _R(0x100000, 0x2000, False)])
    assert same.agrees and same.agreed == 0x6000
    short = compare_with_walk(owner, [_R(0x10000, 0x2000), _R(0x100000, 0x2000, False)])
    assert short.only_vfio == [(0x12000, 0x2000)] and not short.agrees
    extra = compare_with_walk(owner, [_R(0x10000, 0x4000), _R(0x100000, 0x2000, False), _R(0x200000, 0x1000)])
    assert extra.only_tables == [(0x200000, 0x1000)]
    perm = compare_with_walk(owner, [_R(0x10000, 0x4000, False), _R(0x100000, 0x2000, False)])
    assert perm.permission == [(0x10000, 0x4000)] and "disagree" in perm.text()


def test_vfio_rule_keeps_what_still_blocks():
    """Its own Bus Master flag and enable count do not decide a VFIO-owned function; a
    bridge above with Bus Master off (kernel-owned, its flag is real) still does."""
    from dumpkit.pci.collect import PciDevice, PciTree, _judge_dma

    def tree(port_master: bool):
        port = PciDevice("0000:00:02.0", 0x1b36, 0x000c, class_code=0x060400, is_bridge=True, driver="pcieport",
                         enable_count=1, is_busmaster=port_master, power_state="D0", error_state="normal")
        ep = PciDevice("0000:01:00.0", 0x8086, 0x10d3, class_code=0x020000, parent=port.bdf, driver="vfio-pci",
                       enable_count=1, is_busmaster=False, power_state="D0", error_state="normal",
                       vfio=_owner((0x10000, 0x4000, True)))
        t = PciTree([port, ep], None, [])
        _judge_dma(t)
        return t.get(ep.bdf)

    assert tree(True).could_dma is True
    blocked = tree(False)
    assert blocked.could_dma is False and blocked.could_dma_reason == "Bus Master off on a bridge above"
