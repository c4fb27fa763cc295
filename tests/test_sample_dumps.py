"""The committed sample dumps: integrity, drgn readability, agreement with ground truth."""

from __future__ import annotations

import re

import drgn
import pytest
from conftest import (
    CAPTURE_KERNEL_DUMPS,
    DUMPS,
    ELF_DUMPS,
    FIRST_KERNEL_DUMPS,
    MANIFEST,
    SAMPLES,
    capture_log,
    dump_id,
    dump_path,
    ground_truth_pci,
    sha256,
)
from drgn.helpers.linux.pci import for_each_pci_dev

DMAR_FAULT = re.compile(r"DMAR: \[DMA (?:Read|Write)[^\]]*\] Request device \[([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\]")
SCENARIOS = sorted({d["scenario"] for d in DUMPS})


def open_dump(entry: dict) -> drgn.Program:
    vmcoreinfo = (SAMPLES / entry["vmcoreinfo"]).read_text() if entry["vmcoreinfo"] else None
    prog = drgn.Program(drgn.host_platform, vmcoreinfo=vmcoreinfo)
    prog.set_core_dump(str(dump_path(entry)))
    prog.load_debug_info([str(SAMPLES / entry["debug_file"])])
    return prog


def vmcoreinfo_field(prog: drgn.Program, key: str) -> str:
    text = prog["VMCOREINFO"].string_().decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)[key]


def nic_bdf(scenario: str) -> str:
    (bdf,) = [b for b, d in ground_truth_pci(scenario).items() if d["driver"] == "e1000e"]
    return bdf


def test_manifest_lists_every_scenario_once_per_kind():
    kinds = [(d["scenario"], d["kind"]) for d in DUMPS]
    assert len(kinds) == len(set(kinds))
    assert {"copied-traffic", "nocopy-fault", "idle"} <= set(SCENARIOS)
    assert {d["scenario"] for d in CAPTURE_KERNEL_DUMPS} >= {"copied-traffic", "nocopy-fault"}


@pytest.mark.parametrize("entry", DUMPS, ids=dump_id)
def test_dump_file_matches_manifest(entry):
    path = SAMPLES / entry["file"]
    assert path.stat().st_size == entry["size"]
    assert sha256(path) == entry["sha256"]
    for gt in entry["ground_truth"] + [entry["capture_log"], entry["console_log"]]:
        assert (SAMPLES / gt).is_file(), gt


def test_debug_file_matches_manifest():
    kernel = MANIFEST["kernel"]
    assert sha256(SAMPLES / kernel["debug_file"]) == kernel["debug_file_sha256"]


def test_sample_dumps_fit_the_size_budget():
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    # the budget: 300 MiB of committed binaries (the 6.1, 6.12 and 7.2 kernels and the dumps)
    assert total <= 300 * 1024 * 1024, f"sample-dumps/ holds {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("entry", DUMPS, ids=dump_id)
def test_drgn_opens_dump_with_committed_debug_file(entry):
    prog = open_dump(entry)
    assert prog["UTS_RELEASE"].string_().decode() == entry["kernel_release"]
    assert vmcoreinfo_field(prog, "BUILD-ID") == entry["build_id"] == MANIFEST["kernel"]["build_id"]
    # types, variables and a stack trace all come from the debug file
    assert prog.type("struct intel_iommu").size > 0
    if entry["kind"] != "capture-kernel dump":
        trace = prog.crashed_thread().stack_trace()
        assert "sysrq_handle_crash" in [frame.name for frame in trace]
    else:
        # the capture kernel's own view: it is the kdump kernel
        # 6.1 sets elfcorehdr_addr to ELFCORE_ADDR_ERR (-2) once /proc/vmcore is set up
        assert prog["elfcorehdr_addr"].value_() != 2**64 - 1
        assert prog["reset_devices"].value_() == 1


@pytest.mark.parametrize("entry", CAPTURE_KERNEL_DUMPS, ids=dump_id)
def test_capture_dump_opens_without_vmcoreinfo_override(entry):
    # QEMU's kdump header names no architecture that libkdumpfile knows: give the platform
    prog = drgn.Program(drgn.host_platform)
    prog.set_core_dump(str(SAMPLES / entry["file"]))
    prog.load_debug_info([str(SAMPLES / entry["debug_file"])])
    cmdline = prog["saved_command_line"].string_().decode()
    assert "elfcorehdr=" in cmdline and f"dumpkit.scenario={entry['scenario']}" in cmdline
    assert vmcoreinfo_field(prog, "KERNELOFFSET") in (SAMPLES / entry["vmcoreinfo"]).read_text()


@pytest.mark.parametrize("entry", FIRST_KERNEL_DUMPS + ELF_DUMPS, ids=dump_id)
def test_pci_devices_in_dump_equal_ground_truth(entry):
    prog = open_dump(entry)
    in_dump = {dev.dev.kobj.name.string_().decode() for dev in for_each_pci_dev(prog)}
    assert in_dump == set(ground_truth_pci(entry["scenario"]))


@pytest.mark.parametrize("entry", CAPTURE_KERNEL_DUMPS, ids=dump_id)
def test_capture_dump_pci_devices_equal_capture_ground_truth(entry):
    prog = open_dump(entry)
    in_dump = {dev.dev.kobj.name.string_().decode() for dev in for_each_pci_dev(prog)}
    assert in_dump == set(ground_truth_pci(entry["scenario"], capture=True))


def test_nocopy_fault_capture_log_has_dmar_fault_from_the_nic():
    log = capture_log("nocopy-fault")
    assert "Failed to copy translation tables from previous kernel" in log
    faulting = {m.group(1) for m in DMAR_FAULT.finditer(log)}
    assert nic_bdf("nocopy-fault").removeprefix("0000:") in faulting


def test_copied_traffic_capture_log_copies_tables_without_faults():
    log = capture_log("copied-traffic")
    assert "Copied translation tables from previous kernel" in log
    assert not DMAR_FAULT.search(log)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "idle"])
def test_nic_was_receiving_when_the_kernel_crashed(scenario):
    gt = (SAMPLES / scenario / "ground-truth" / "nic-rx-before-crash.txt").read_text().split()
    assert int(gt[2]) >= 50


def test_ground_truth_is_consistent_with_its_config_space():
    for scenario in SCENARIOS:
        for bdf, dev in ground_truth_pci(scenario).items():
            cfg = bytes.fromhex(dev["config"])
            assert int.from_bytes(cfg[0:2], "little") == dev["vendor"], bdf
            assert int.from_bytes(cfg[2:4], "little") == dev["device"], bdf
            assert dev["bus_master"] == bool(cfg[4] & 4), bdf
