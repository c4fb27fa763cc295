"""The sample factory's iommufd scenario (vfio-iommufd-fault): the NIC owned by vfio-rx
--iommufd through its VFIO device cdev and /dev/iommu on our 6.12 and 7.2 kernels
(kernel-patches/build --series S; committed under sample-dumps/kernel-S/), scalable-mode
VT-d in the first kernel and legacy in the capture kernel. 7.2's iommufd attaches page
tables per PASID (iommufd_group.pasid_attach), 6.12's one per group (.hwpt). What
the generator and the kernel's config fragment define, and the records of the generated
sample in the cache against each other: run.json, the userspace driver's
ground-truth/vfio.json, QEMU's trace and the capture log. The dump's decoding is
tests/test_vfio.py's."""

from __future__ import annotations

import json
import lzma
import os
import re
from pathlib import Path

import pytest
from conftest import REPO, cached_samples, load_generator

NAME = "vfio-iommufd-fault"
# per series: our kernel's release ("6.12.118", not trixie's stock "6.12.118+deb13-amd64";
# "7.2.13", not sid's "7.2.13+deb14-amd64") and its source package
SERIES = {"6.12": (re.compile(r"6\.12\.\d+$"), "linux-source-6.12"),
          "7.2": (re.compile(r"7\.2\.\d+$"), "linux-source-7.2")}
RX_IOVA = 0x10000000        # guest/vfio-rx.c: the ring and its buffers, as on the type1 path
PAGE = 4096

GEN = load_generator()
ROOTS = {s: cached_samples(NAME, release) for s, (release, _pkg) in SERIES.items()}


def fragment(series: str) -> Path:
    return REPO / "kernel-patches" / "config" / f"qemu-q35-vtd-{series}.config"


@pytest.fixture(params=sorted(SERIES))
def series(request) -> str:
    return request.param


def scenario_dir(series: str) -> Path:
    """The cached scenario of that series; skipped with one line when it is not there, an
    error in CI."""
    if ROOTS[series] is None:
        msg = (f"no {NAME} on our {series} kernel in the cache: sample-dumps/generate --scenario iommufd "
               f"--series {series} (scripts/setup does)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return ROOTS[series] / NAME


def records(d: Path) -> tuple[dict, dict, str]:
    run = json.loads((d / "run.json").read_text())
    truth = json.loads((d / "ground-truth" / "vfio.json").read_text())
    return run, truth, (d / "capture-dmesg.txt").read_text(errors="replace")


# --- definitions (no sample needed) ---------------------------------------------

def test_the_generator_defines_the_scenario():
    sc = GEN.SCENARIOS[NAME]
    assert GEN.SCENARIO_GROUPS["iommufd"] == [NAME]
    assert sc.series == "6.12" and not sc.distro and sc.vfio == "iommufd" and sc.scalable_mode
    assert sc.expects_fault and sc.first_iommu.endswith("sm_on") and sc.capture_iommu.endswith("sm_off")
    # neither a committed scenario nor one of the stock kernel's groups setup runs
    for group in ("all", "distro", "vfio", "first-stage", "amd", "hw", "cma"):
        assert NAME not in GEN.SCENARIO_GROUPS[group], group
    assert GEN.VFIO_MODES["iommufd"] == "iommufd" and "iommufd" in GEN.VFIO_DMA_OWNER["iommufd"]
    # --series boots our kernel of another series instead, with that suite's tools
    assert set(GEN.SERIES_SUITES) == set(SERIES) == {"6.12", "7.2"}
    args = GEN.argparse.Namespace(kexec=None, series="7.2")
    assert GEN.chosen(NAME, args).series == "7.2" and GEN.chosen("vfio-nocopy-fault", args).series == ""
    events = {GEN.CANONICAL_EVENTS.get(e, e) for e in GEN.trace_events(sc)}
    assert {"e1000e_rx_descr", "e1000e_rx_desc_buff_write", "vtd_dmar_fault"} <= events
    k = GEN.Kernel(Path("/k/bzImage"), Path("/k/vmlinux.debug"), {"kernel_release": "6.12.118", "build_id": "0"})
    first = " ".join(GEN.qemu_command(sc, k, Path("/i"), Path("/w"), 1))
    assert "x-scalable-mode=on" in first and "dumpkit.vfio=iommufd" in first and "intel_iommu=on,sm_on" in first
    capture = GEN.capture_cmdline(sc, k)
    # our 6.12 kernel carries no port-reset patch: nothing to switch off; its built-in e1000e
    # is kept from the NIC in the capture kernel, as the stock one's initramfs loads none
    assert "intel_iommu=on,sm_off" in capture and "pci=nokdumpreset" not in capture
    assert "initcall_blacklist=e1000_init_module" in capture
    # the stream pauses soon after the crash, before the capture kernel switches translation off
    assert sc.pauses_streams and sc.stream_pause_after_crash_s < GEN.FAULT_STREAM_PAUSE_AFTER_CRASH_S
    assert f"-d {GEN.DUMP_LEVEL}" in GEN.makedumpfile_args(sc, k)


def test_the_config_fragment_builds_vfio_and_iommufd_in(series):
    lines = {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in fragment(series).read_text().splitlines()
             if ln and not ln.startswith("#")}
    for opt in ("IOMMUFD", "VFIO", "VFIO_DEVICE_CDEV", "VFIO_GROUP", "VFIO_CONTAINER", "VFIO_PCI", "INTEL_IOMMU",
                "IRQ_REMAP", "E1000E", "KEXEC_FILE", "CRASH_DUMP", "PROC_VMCORE", "9P_FS", "SERIAL_8250_CONSOLE",
                "DEBUG_INFO_DWARF5"):
        assert lines.get(f"CONFIG_{opt}") == "y", opt
    # built in: vmlinux's DWARF covers vfio and iommufd (no module debug files)
    assert lines["CONFIG_MODULES"] == "n" and lines["CONFIG_DEBUG_INFO_REDUCED"] == "n"
    build = (REPO / "kernel-patches" / "build").read_text()
    assert f"qemu-q35-vtd-{series}.config" in build and SERIES[series][1] in build


# --- the cached sample's records ---------------------------------------------------

def test_the_manifest_names_our_kernel(series):
    d = scenario_dir(series)
    manifest = json.loads((d.parent / "manifest.json").read_text())
    k = manifest["kernel"]
    release, package = SERIES[series]
    assert release.match(k["kernel_release"]) and k["source_package"] == package
    assert k["config_fragment"] == f"kernel-patches/config/qemu-q35-vtd-{series}.config" and k["patches"] == []
    (vmcore,) = [e for e in manifest["dumps"] if e["scenario"] == NAME and e["kind"] == "first-kernel vmcore"]
    assert vmcore["build_id"] == k["build_id"] and (d.parent / vmcore["file"]).is_file()
    # the debug directory a reader passes to --debuginfo: the kernel's build output
    assert Path(k["debug_dir"]) == Path(k["bzimage"]).parent == Path(k["debug_file"]).parent
    # the kernel's directory: sample-dumps/kernel-SERIES/ (committed) or where kernel-patches/build put it
    built = json.loads((d.parent / Path(k["bzimage"]).parent / "build-info.json").read_text())
    assert built["build_id"] == k["build_id"] and built["kernel_release"] == k["kernel_release"]
    assert built["source_version"] == k["source_version"] and built["jobs"] > 0 and built["build_seconds"] > 0
    assert (d.parent / k["debug_file"]).is_file() and (d.parent / k["bzimage"]).is_file()
    run = json.loads((d / "run.json").read_text())
    assert run["kernel_release"] == k["kernel_release"]
    assert k["kernel_release"] in (d / "ground-truth" / "uname.txt").read_text()


def test_run_json_agrees_with_the_driver_s_record(series):
    d = scenario_dir(series)
    run, truth, _ = records(d)
    assert run["dma_owner"] == GEN.VFIO_DMA_OWNER["iommufd"]
    assert run["capture_path"]["format"] == "kdump-compressed"
    # -d 31, and on 7.x -d 23 (the kdump sub-header's level there), as for the stock kernels
    assert run["capture_path"]["dump_level"] == (GEN.DUMP_LEVEL_7X if series == "7.2" else GEN.DUMP_LEVEL)
    v = run["vfio"]
    assert v["mode"] == "iommufd" and v["container"] == truth["container"] == "iommufd"
    assert (v["pid"], v["comm"], v["bdf"], v["iommu_group"]) == \
        (truth["pid"], truth["comm"], truth["bdf"], truth["iommu_group"])
    assert v["iommufd"] == truth["iommufd"]
    assert [(int(m["iova"], 16), int(m["size"], 16)) for m in v["mappings"]] == \
        [(m["iova"], m["size"]) for m in truth["mappings"]]
    assert {k: v["ring"][k] for k in v["ring"]} == {k: truth["ring"][k] for k in v["ring"]}
    assert GEN.mechanism_problems(GEN.dataclasses.replace(GEN.SCENARIOS[NAME], series=series), d) == []


def test_the_driver_owns_the_nic_through_iommufd(series):
    d = scenario_dir(series)
    _, t, _ = records(d)
    i = t["iommufd"]
    assert re.fullmatch(r"vfio\d+", i["cdev"]) and i["attached_before_map"] is True
    # iommufd object ids: the IOAS, the device's bond and the hwpt the attach allocated
    assert len({i["ioas_id"], i["devid"], i["hwpt_id"]}) == 3 and min(i["ioas_id"], i["devid"], i["hwpt_id"]) > 0
    fds = (d / "ground-truth" / "vfio-rx-fds.txt").read_text()
    assert re.search(rf"\b{i['iommufd_fd']} -> /dev/iommu$", fds, re.MULTILINE)
    assert re.search(rf"\b{i['device_fd']} -> /dev/vfio/devices/{i['cdev']}$", fds, re.MULTILINE)
    assert "/dev/vfio/vfio" not in fds and not re.search(r"/dev/vfio/\d+$", fds, re.MULTILINE)   # no container, group
    takeover = (d / "ground-truth" / "vfio-takeover.txt").read_text()
    assert f"vfio_cdev {i['cdev']}\n" in takeover and f"bdf {t['bdf']}\n" in takeover
    assert re.search(r"^modules\s*$", takeover, re.MULTILINE)       # built in: nothing loaded
    pci = json.loads((d / "ground-truth" / "pci.json").read_text())["devices"][t["bdf"]]
    assert pci["driver"] == "vfio-pci" and pci["iommu_group"] == t["iommu_group"] and pci["bus_master"]


def test_the_mappings_are_the_type1_path_s(series):
    d = scenario_dir(series)
    _, t, _ = records(d)
    (m,) = t["mappings"]
    ring = t["ring"]
    # the RX region at the type1 path's IOVA: 4096 legacy descriptors, then 4096 2 KiB buffers
    assert m["iova"] == ring["iova"] == RX_IOVA and ring["descriptors"] == 4096 and ring["buffer_size"] == 2048
    assert ring["buffers_iova"] == RX_IOVA + 4096 * 16
    assert m["size"] == 4096 * 16 + 4096 * 2048 and m["prot"] == "rw"
    assert sum(n for _p, n in m["phys"]) == m["size"]
    assert all(p % PAGE == 0 and n % PAGE == 0 and n > 0 for p, n in m["phys"])
    assert any(lo <= m["iova"] and m["iova"] + m["size"] - 1 <= hi for lo, hi in t["iova_ranges"])
    assert t["ring"]["received"] > 0 and 0 <= ring["rdh"] < ring["descriptors"]
    areas = [(int(lo, 16), int(hi, 16)) for lo, hi in
             re.findall(r"^([0-9a-f]+)-([0-9a-f]+) rw", (d / "ground-truth" / "vfio-rx-maps.txt").read_text(), re.M)]
    assert any(lo <= m["vaddr"] and m["vaddr"] + m["size"] <= hi for lo, hi in areas), hex(m["vaddr"])


def test_qemu_s_trace_gives_run_json_s_counts(tmp_path, series):
    d = scenario_dir(series)
    run, truth, _ = records(d)
    trace = tmp_path / "qemu-trace.log"
    with lzma.open(d / "qemu-trace.log.xz", "rb") as f:
        trace.write_bytes(f.read())
    again = GEN.vfio_facts(GEN.dataclasses.replace(GEN.SCENARIOS[NAME], series=series), truth, trace, run)
    assert again["traced_rx_dma"] == run["vfio"]["traced_rx_dma"]
    c = run["vfio"]["traced_rx_dma"]
    assert c["buffer_writes_before_crash"] > 0 and c["buffer_writes_after_crash"] > 0
    # DMAR faults in QEMU's trace after the crash, from the NIC
    bdf = truth["bdf"][-7:]
    bus, dev, fn = int(bdf[:2], 16), int(bdf[3:5], 16), int(bdf[6])
    sid = bus << 8 | dev << 3 | fn
    faults = [float(t) for t, s in re.findall(r"^\d+@(\d+\.\d+):vtd_dmar_fault sid 0x([0-9a-f]+)",
                                             trace.read_text(errors="replace"), re.MULTILINE)
              if int(s, 16) == sid]
    assert faults and min(faults) >= run["crash_epoch"]


def test_the_capture_kernel_faults_at_the_ioas_iovas(series):
    d = scenario_dir(series)
    _, t, log = records(d)
    assert "Failed to copy translation tables from previous kernel" in log
    faults = [int(a, 16) for dev, a in GEN.DMAR_FAULT_LINE.findall(log) if dev == t["bdf"][-7:]]
    assert faults and all(any(m["iova"] <= a < m["iova"] + m["size"] for m in t["mappings"]) for a in faults)
    assert "sm_on" in (d / "ground-truth" / "cmdline.txt").read_text()
    capture = (d / "capture-ground-truth" / "cmdline.txt").read_text()
    assert "sm_off" in capture and "initcall_blacklist=e1000_init_module" in capture
    # the capture kernel left the NIC unclaimed (no e1000e probe resetting it)
    pci = json.loads((d / "capture-ground-truth" / "pci.json").read_text())["devices"][t["bdf"]]
    assert not pci.get("driver")
