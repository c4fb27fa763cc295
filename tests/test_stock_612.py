"""Debian 13's stock 6.12 kernel (linux-image-6.12.*-amd64 and its -dbg package, from
trixie through a private apt configuration) in the VT-d scenarios of the 6.1 stock kernel:
distro-copied-traffic and distro-nocopy-fault, checked against the ground truth and QEMU
trace of the same run. Generated only when asked (not by scripts/setup):

    sample-dumps/generate --suite trixie --scenario distro-copied-traffic --scenario distro-nocopy-fault

(or --package linux-image-6.12.N+debM-amd64). Skipped, also in CI, when the cache has no
6.12 family: conftest's needs_cached() makes a missing cached scenario an error in CI,
and setup does not generate these. Devices are found by driver, nothing depends on the
package revision."""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dumpkit
from conftest import assert_pci_tree_equals, cached_dump
from dumpkit.iommu.collect import collect_iommu
from dumpkit.verdict import judge

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
SERIES = re.compile(r"6\.12\.")
SCENARIOS = ["distro-copied-traffic", "distro-nocopy-fault"]
GENERATE = "sample-dumps/generate --suite trixie --scenario distro-copied-traffic --scenario distro-nocopy-fault"


def _root(scenario: str) -> Path | None:
    """The newest cache directory of a 6.12 stock kernel whose manifest has the scenario."""
    found = []
    for m in (CACHE / "samples").glob("*/manifest.json"):
        data = json.loads(m.read_text())
        if SERIES.match(data.get("kernel", {}).get("kernel_release", "")) and data["kernel"].get("debug_dir") \
                and any(d["scenario"] == scenario for d in data["dumps"]):
            found.append(m.parent)
    return max(found, key=lambda r: (r / "manifest.json").stat().st_mtime) if found else None


ROOTS = {sc: _root(sc) for sc in SCENARIOS}


def needs(scenario: str):
    return pytest.mark.skipif(ROOTS[scenario] is None,
                              reason=f"no 6.12 stock-kernel {scenario} in {CACHE / 'samples'}: not made by "
                                     f"scripts/setup; run {GENERATE}")


def each_scenario():
    return pytest.mark.parametrize("scenario", [pytest.param(sc, marks=needs(sc)) for sc in SCENARIOS])


_OPENED: dict = {}


def debug_dir(scenario: str) -> Path:
    root = ROOTS[scenario]
    return (root / json.loads((root / "manifest.json").read_text())["kernel"]["debug_dir"]).resolve()


def opened(scenario: str):
    if scenario not in _OPENED:
        _OPENED[scenario] = dumpkit.open(cached_dump(ROOTS[scenario], scenario), debuginfo=[debug_dir(scenario)])
    return _OPENED[scenario]


def scenario_dir(scenario: str) -> Path:
    return ROOTS[scenario] / scenario


def truth(scenario: str) -> dict:
    return json.loads((scenario_dir(scenario) / "ground-truth" / "pci.json").read_text())["devices"]


def run_facts(scenario: str) -> dict:
    return json.loads((scenario_dir(scenario) / "run.json").read_text())


def bdf_of(scenario: str, driver: str) -> str:
    return next(b for b, d in truth(scenario).items() if d["driver"] == driver)


def verdicts(scenario: str):
    return judge(opened(scenario), [scenario_dir(scenario) / "capture-dmesg.txt"])


def trace(scenario: str) -> str:
    with lzma.open(scenario_dir(scenario) / "qemu-trace.log.xz", "rt") as f:
        return f.read()


@each_scenario()
def test_the_kernel_is_a_6_12_stock_kernel_with_kaslr(scenario):
    info = opened(scenario).info
    assert SERIES.match(info.kernel_release) and info.panic_message.endswith("sysrq triggered crash")
    assert "sysrq_handle_crash" in info.crash_stack
    assert int(opened(scenario).vmcoreinfo.get("KERNELOFFSET", "0"), 16) != 0


@each_scenario()
def test_the_dump_was_saved_by_the_kernel_suites_makedumpfile(scenario):
    """Debian 12's makedumpfile 1.7.2 drops slab pages of kernels >= 6.2; the guest ran the
    kernel's own suite's (run.json names it). Every struct pci_dev is a slab object: the
    PCI tree test below reads them all."""
    tools = run_facts(scenario).get("guest_tools", {})
    assert "makedumpfile" in tools and tools["makedumpfile"]["suite"]
    assert run_facts(scenario)["makedumpfile_log"][-1] == "makedumpfile Completed."


@each_scenario()
def test_pci_tree_equals_ground_truth(scenario):
    assert_pci_tree_equals(opened(scenario).pci(), truth(scenario))


@each_scenario()
def test_modules_match_proc_modules_and_have_debug_info(scenario):
    gt = {}
    for line in (scenario_dir(scenario) / "ground-truth" / "modules.txt").read_text().splitlines():
        f = line.split()
        gt[f[0]] = int(f[5], 16)
    mods = {m.name: m for m in opened(scenario).modules()}
    assert set(mods) == set(gt)
    for name, addr in gt.items():
        m = mods[name]
        assert m.address <= addr < m.address + m.size, name
        assert m.status == "debug info loaded" and m.debug_file.startswith(str(debug_dir(scenario))), name


@each_scenario()
def test_nic_post_crash_completions_as_qemu_traced(scenario):
    v = verdicts(scenario).get(bdf_of(scenario, "e1000e"))
    counts = run_facts(scenario)["qemu_events"]["counts"]
    traced = sum(counts[p].get("e1000e_rx_written_to_guest", 0) for p in ("crash_to_capture_init", "after_capture_init"))
    assert v.did_dma_after_crash.value is True and v.landed_pages
    assert abs(v.post_crash_completions - traced) <= 5, (v.post_crash_completions, traced)


@each_scenario()
def test_nvme_unprocessed_completions_are_the_last_the_device_wrote(scenario):
    """What the decoder counts are completion entries past the driver's head: each must be
    one QEMU wrote in the last 0.2 s before the generator saw the crash marker (it sees it
    up to 0.1 s late, so the trace's phases put them before the crash) or after."""
    v = verdicts(scenario).get(bdf_of(scenario, "nvme"))
    crash = run_facts(scenario)["crash_epoch"]
    late = [float(t) for t in re.findall(r"^\d+@(\d+\.\d+):pci_nvme_enqueue_req_completion", trace(scenario), re.M)
            if float(t) >= crash - 0.2]
    assert v.post_crash_completions is not None and v.post_crash_completions <= len(late)


@each_scenario()
def test_capture_log_agrees_with_the_crash_fact_by_fact(scenario):
    proc = _dumpkit("--debuginfo", debug_dir(scenario), "verdict", cached_dump(ROOTS[scenario], scenario),
                    "--capture-log", scenario_dir(scenario) / "capture-dmesg.txt", "--json")
    matches = json.loads(proc.stdout)["capture_matches"]
    (m,) = matches.values()
    assert m["status"] == "consistent"
    assert set(m["facts"]) >= {"elfcorehdr", "memory_map", "initrd", "clock", "pci"}
    assert set(m["facts"].values()) == {"agree"}


@needs("distro-copied-traffic")
def test_copied_traffic_capture_kernel_copied_the_tables_and_nothing_faulted():
    sc = "distro-copied-traffic"
    assert "Copied translation tables from previous kernel" in (scenario_dir(sc) / "capture-dmesg.txt").read_text()
    assert "vtd_dmar_fault" not in trace(sc)
    state = collect_iommu(opened(sc), [scenario_dir(sc) / "capture-dmesg.txt"])
    assert not [c for c in state.correlations if c.fault.kind == "dma-remap"]
    (entry,) = [e for e in state.entries if e.bdf == bdf_of(sc, "e1000e")]
    assert entry.translation == "translated" and entry.detail["scalable_mode"] is False and not entry.errors


@needs("distro-nocopy-fault")
def test_nocopy_fault_attributed_to_the_nic_and_resolved_in_the_first_kernels_tables():
    sc = "distro-nocopy-fault"
    state = collect_iommu(opened(sc), [scenario_dir(sc) / "capture-dmesg.txt"])
    (entry,) = [e for e in state.entries if e.bdf == bdf_of(sc, "e1000e")]
    assert entry.detail["scalable_mode"] is True and entry.detail["vtd_translation"] == "second-level"
    logged = [c for c in state.correlations if c.fault.kind == "dma-remap" and c.fault.source != "printk"]
    assert logged, "the capture log holds a DMA fault"
    traced = {(int(s, 16), int(a, 16) & ~0xFFF)
              for s, a in re.findall(r"vtd_dmar_fault sid (0x[0-9a-f]+) fault \d+ addr (0x[0-9a-f]+)", trace(sc))}
    for c in logged:
        assert c.device == bdf_of(sc, "e1000e") and c.driver == "e1000e"
        bus, dev, fn = (int(x, 16) for x in re.split(r"[:.]", c.device[5:]))
        assert ((bus << 8) | (dev << 3) | fn, c.fault.address & ~0xFFF) in traced
        assert c.phys is not None and c.writable and c.buffer
    v = verdicts(sc).get(bdf_of(sc, "e1000e"))
    assert v.hit_capture_kernel.value is True and v.faults >= 1


def _dumpkit(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dumpkit.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@each_scenario()
def test_verdict_pci_and_iommu_commands_run(scenario):
    dump, dbg = cached_dump(ROOTS[scenario], scenario), debug_dir(scenario)
    verdict = json.loads(_dumpkit("--debuginfo", dbg, "verdict", dump, "--json").stdout)
    assert not verdict["errors"]
    assert any(e["driver"] == "e1000e" and e["did_dma_after_crash"] is True for e in verdict["endpoints"])
    pci = json.loads(_dumpkit("--debuginfo", dbg, "pci", dump, "--json").stdout)
    assert len(pci["devices"]) == len(truth(scenario))
    iommu = _dumpkit("--debuginfo", dbg, "iommu", dump).stdout
    assert "dmar0 (intel-vtd)" in iommu
    if scenario == "distro-nocopy-fault":
        assert "e1000e RX descriptor ring" in iommu
