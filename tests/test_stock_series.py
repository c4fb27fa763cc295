"""The stock kernels of the newer series in the VT-d scenarios of the 6.1 stock kernel
(distro-copied-traffic and distro-nocopy-fault), checked against the ground truth and QEMU
trace of the same run: Debian 13's 6.12 (linux-image-6.12.*-amd64, from trixie) and sid's
7.x (linux-image-7.*-amd64, split into linux-binary/-modules/-base packages), each with
its -dbg package, fetched through a private apt configuration and dumped by that suite's
makedumpfile (at -d 23 on 7.x, see sample-dumps/generate DUMP_LEVEL_7X). scripts/setup
generates both:

    sample-dumps/generate --suite trixie --scenario distro-copied-traffic --scenario distro-nocopy-fault
    sample-dumps/generate --suite sid --scenario distro-copied-traffic --scenario distro-nocopy-fault

A missing one is skipped outside CI and an error in CI (conftest.needs_cached). Devices
are found by driver, kernels by series: nothing depends on the package revision."""

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
from conftest import assert_pci_tree_equals, cached_dump, needs_cached
from dumpkit.iommu.collect import collect_iommu
from dumpkit.iommu.model import lookup
from dumpkit.verdict import judge

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
# kernel series by release, and the suite whose linux-image-amd64 setup takes it from
SERIES = {"6.12": re.compile(r"6\.12\."), "7.x": re.compile(r"7\.")}
SUITE = {"6.12": "trixie", "7.x": "sid"}
SCENARIOS = ["distro-copied-traffic", "distro-nocopy-fault", "fs-copied", "fs-nocopy-fault"]
# the VT-d tables each scenario's first kernel set up: scalable mode with second-stage
# tables under QEMU 7.2, first-stage ones under QEMU 10 with x-flts=on (fs-*)
# (legacy mode: "untranslated", the context entry's translation type for DMA remapping)
FIRST_KERNEL_TABLES = {"distro-copied-traffic": "untranslated", "distro-nocopy-fault": "second-level",
                       "fs-copied": "first-level", "fs-nocopy-fault": "first-level"}
# the page-table format `dumpkit iommu` names for each (TranslationEntry.tables)
TABLES = {"untranslated": "legacy", "second-level": "second-stage", "first-level": "first-stage"}


def _root(series: str, scenario: str) -> Path | None:
    """The newest cache directory of a stock kernel of the series whose manifest has the scenario."""
    found = []
    for m in (CACHE / "samples").glob("*/manifest.json"):
        data = json.loads(m.read_text())
        if SERIES[series].match(data.get("kernel", {}).get("kernel_release", "")) \
                and data["kernel"].get("debug_dir") and any(d["scenario"] == scenario for d in data["dumps"]):
            found.append(m.parent)
    return max(found, key=lambda r: (r / "manifest.json").stat().st_mtime) if found else None


# keyed "SERIES/SCENARIO", as the tests are parametrized
ROOTS = {f"{se}/{sc}": _root(se, sc) for se in SERIES for sc in SCENARIOS}


def needs(case: str):
    series, scenario = case.split("/")
    return needs_cached(f"{series} stock-kernel {scenario} (sample-dumps/generate --suite {SUITE[series]})",
                        ROOTS[case])


def each_scenario(scenario: str | None = None):
    return pytest.mark.parametrize("case", [pytest.param(c, marks=needs(c)) for c in ROOTS
                                            if scenario is None or c.endswith("/" + scenario)])


_OPENED: dict = {}


def scenario_of(case: str) -> str:
    return case.split("/")[1]


def debug_dir(case: str) -> Path:
    root = ROOTS[case]
    return (root / json.loads((root / "manifest.json").read_text())["kernel"]["debug_dir"]).resolve()


def dump_of(case: str) -> Path:
    return cached_dump(ROOTS[case], scenario_of(case))


def opened(case: str):
    if case not in _OPENED:
        _OPENED[case] = dumpkit.open(dump_of(case), debuginfo=[debug_dir(case)])
    return _OPENED[case]


def scenario_dir(case: str) -> Path:
    return ROOTS[case] / scenario_of(case)


def truth(case: str) -> dict:
    return json.loads((scenario_dir(case) / "ground-truth" / "pci.json").read_text())["devices"]


def run_facts(case: str) -> dict:
    return json.loads((scenario_dir(case) / "run.json").read_text())


def bdf_of(case: str, driver: str) -> str:
    return next(b for b, d in truth(case).items() if d["driver"] == driver)


def verdicts(case: str):
    return judge(opened(case), [scenario_dir(case) / "capture-dmesg.txt"])


def trace(case: str) -> str:
    with lzma.open(scenario_dir(case) / "qemu-trace.log.xz", "rt") as f:
        return f.read()


@each_scenario()
def test_the_kernel_is_a_stock_kernel_of_its_series_with_kaslr(case):
    info = opened(case).info
    assert SERIES[case.split("/")[0]].match(info.kernel_release)
    assert run_facts(case)["kernel_release"] == info.kernel_release
    assert info.panic_message.endswith("sysrq triggered crash")
    assert "sysrq_handle_crash" in info.crash_stack
    assert int(opened(case).vmcoreinfo.get("KERNELOFFSET", "0"), 16) != 0


@each_scenario()
def test_the_dump_was_saved_by_the_kernel_suites_makedumpfile(case):
    """Debian 12's makedumpfile 1.7.2 drops slab pages of kernels >= 6.2; the guest ran the
    kernel's own suite's (run.json names it), at the dump level run.json records. Every
    struct pci_dev is a slab object: the PCI tree test below reads them all."""
    facts = run_facts(case)
    tools = facts.get("guest_tools", {})
    assert "makedumpfile" in tools and tools["makedumpfile"]["suite"] == SUITE[case.split("/")[0]]
    assert facts["makedumpfile_log"][-1] == "makedumpfile Completed."
    level = facts["capture_path"]["dump_level"]
    assert f"-d {level}" in facts["capture_path"]["makedumpfile"]
    assert opened(case).info.dump_level == level, "the dump's kdump sub-header records the level used"


@each_scenario()
def test_pci_tree_equals_ground_truth(case):
    assert_pci_tree_equals(opened(case).pci(), truth(case))


@each_scenario()
def test_modules_match_proc_modules_and_have_debug_info(case):
    gt = {}
    for line in (scenario_dir(case) / "ground-truth" / "modules.txt").read_text().splitlines():
        f = line.split()
        gt[f[0]] = int(f[5], 16)
    mods = {m.name: m for m in opened(case).modules()}
    assert set(mods) == set(gt)
    for name, addr in gt.items():
        m = mods[name]
        assert m.address == addr, (name, "the text address /proc/modules prints")
        assert m.status == "debug info loaded" and m.debug_file.startswith(str(debug_dir(case))), name


@each_scenario()
def test_nic_post_crash_completions_as_qemu_traced(case):
    v = verdicts(case).get(bdf_of(case, "e1000e"))
    counts = run_facts(case)["qemu_events"]["counts"]
    # once the capture kernel's fresh tables are on (fault scenarios), the NIC's writes
    # fault: QEMU 10's e1000e still traces them as written, 7.2's stops after one
    landed = ["crash_to_capture_init"] + ([] if counts["after_capture_init"].get("vtd_dmar_fault")
                                          else ["after_capture_init"])
    traced = sum(counts[p].get("e1000e_rx_written_to_guest", 0) for p in landed)
    assert v.did_dma_after_crash.value is True and v.landed_pages
    assert abs(v.post_crash_completions - traced) <= 5, (v.post_crash_completions, traced)


@each_scenario()
def test_nvme_unprocessed_completions_are_the_last_the_device_wrote(case):
    """What the decoder counts are completion entries past the driver's head: each must be
    one QEMU wrote in the last 0.2 s before the generator saw the crash marker (it sees it
    up to 0.1 s late, so the trace's phases put them before the crash) or after."""
    v = verdicts(case).get(bdf_of(case, "nvme"))
    crash = run_facts(case)["crash_epoch"]
    late = [float(t) for t in re.findall(r"^\d+@(\d+\.\d+):pci_nvme_enqueue_req_completion", trace(case), re.M)
            if float(t) >= crash - 0.2]
    assert v.post_crash_completions is not None and v.post_crash_completions <= len(late)


@each_scenario()
def test_capture_log_agrees_with_the_crash_fact_by_fact(case):
    proc = _dumpkit("--debuginfo", debug_dir(case), "verdict", dump_of(case),
                    "--capture-log", scenario_dir(case) / "capture-dmesg.txt", "--json")
    matches = json.loads(proc.stdout)["capture_matches"]
    (m,) = matches.values()
    assert m["status"] == "consistent"
    assert set(m["facts"]) >= {"elfcorehdr", "memory_map", "initrd", "clock", "pci"}
    assert set(m["facts"].values()) == {"agree"}


def copied_cases():
    return pytest.mark.parametrize("case", [pytest.param(c, marks=needs(c)) for c in ROOTS
                                            if scenario_of(c) in ("distro-copied-traffic", "fs-copied")])


def fault_cases():
    return pytest.mark.parametrize("case", [pytest.param(c, marks=needs(c)) for c in ROOTS
                                            if scenario_of(c) in ("distro-nocopy-fault", "fs-nocopy-fault")])


@copied_cases()
def test_copied_traffic_capture_kernel_copied_the_tables_and_nothing_faulted(case):
    assert "Copied translation tables from previous kernel" in (scenario_dir(case) / "capture-dmesg.txt").read_text()
    assert "vtd_dmar_fault" not in trace(case)
    state = collect_iommu(opened(case), [scenario_dir(case) / "capture-dmesg.txt"])
    assert not [c for c in state.correlations if c.fault.kind == "dma-remap"]
    (entry,) = [e for e in state.entries if e.bdf == bdf_of(case, "e1000e")]
    want = FIRST_KERNEL_TABLES[scenario_of(case)]
    assert entry.translation == "translated" and not entry.errors
    assert entry.detail["scalable_mode"] is (want != "untranslated") and entry.detail["vtd_translation"] == want
    assert entry.tables == TABLES[want]


@fault_cases()
def test_nocopy_fault_attributed_to_the_nic_and_resolved_in_the_first_kernels_tables(case):
    state = collect_iommu(opened(case), [scenario_dir(case) / "capture-dmesg.txt"])
    (entry,) = [e for e in state.entries if e.bdf == bdf_of(case, "e1000e")]
    want = FIRST_KERNEL_TABLES[scenario_of(case)]
    assert entry.detail["scalable_mode"] is True and entry.detail["vtd_translation"] == want
    assert entry.tables == TABLES[want]
    logged = [c for c in state.correlations if c.fault.kind == "dma-remap" and c.fault.source != "printk"]
    assert logged, "the capture log holds a DMA fault"
    traced = {(int(s, 16), int(a, 16) & ~0xFFF)
              for s, a in re.findall(r"vtd_dmar_fault sid (0x[0-9a-f]+) fault \d+ addr (0x[0-9a-f]+)", trace(case))}
    for c in logged:
        assert c.device == bdf_of(case, "e1000e") and c.driver == "e1000e"
        bus, dev, fn = (int(x, 16) for x in re.split(r"[:.]", c.device[5:]))
        assert ((bus << 8) | (dev << 3) | fn, c.fault.address & ~0xFFF) in traced
        assert c.phys is not None and c.writable and c.buffer
    v = verdicts(case).get(bdf_of(case, "e1000e"))
    assert v.hit_capture_kernel.value is True and v.faults >= 1


def _dumpkit(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dumpkit.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@each_scenario()
def test_verdict_pci_and_iommu_commands_run(case):
    dump, dbg = dump_of(case), debug_dir(case)
    verdict = json.loads(_dumpkit("--debuginfo", dbg, "verdict", dump, "--json").stdout)
    assert not verdict["errors"]
    assert any(e["driver"] == "e1000e" and e["did_dma_after_crash"] is True for e in verdict["endpoints"])
    pci = json.loads(_dumpkit("--debuginfo", dbg, "pci", dump, "--json").stdout)
    assert len(pci["devices"]) == len(truth(case))
    iommu = _dumpkit("--debuginfo", dbg, "iommu", dump).stdout
    assert "dmar0 (intel-vtd)" in iommu
    if scenario_of(case) in ("distro-nocopy-fault", "fs-nocopy-fault"):
        assert "e1000e RX descriptor ring" in iommu
    if scenario_of(case).startswith("fs-"):
        assert "first-level" in iommu


TRANSLATION = re.compile(r"^\d+@(\d+\.\d+):vtd_dmar_translate dev ([0-9a-f]{2}):([0-9a-f]{2})\.([0-9a-f]{2}) "
                         r"iova (0x[0-9a-f]+) -> gpa (0x[0-9a-f]+) mask (0x[0-9a-f]+)", re.M)


def translations_after_crash(case: str) -> dict[str, dict[int, int]]:
    """Per device, the IOVA pages QEMU's VT-d translated once the crashed kernel had
    stopped (the NMI IPI its panicking CPU sent the other, in the trace's own clock: the
    guest's crash marker comes earlier, and until that IPI the kernel still maps and
    unmaps DMA) and the physical page each reached (later translations of a page win)."""
    crash = run_facts(case)["qemu_events"]["cpus_stopped_epoch"]
    out: dict[str, dict[int, int]] = {}
    for t, bus, slot, fn, iova, gpa, _mask in TRANSLATION.findall(trace(case)):
        if float(t) > crash:
            bdf = f"0000:{bus}:{int(slot, 16):02x}.{int(fn, 16)}"
            out.setdefault(bdf, {})[int(iova, 16) & ~0xFFF] = int(gpa, 16) & ~0xFFF
    return out


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs(c)) for c in ROOTS
                                  if scenario_of(c).startswith("fs-")])
def test_first_stage_walk_equals_the_translations_qemu_did_after_the_crash(case):
    """Page for page: every IOVA the devices used after the crash (through the crashed
    kernel's first-stage tables, before the capture kernel replaced them or kept on the
    copies) translates in dumpkit's walk of the dump to the physical page QEMU reached."""
    facts = run_facts(case)
    assert "x-flts=on" in facts["qemu"]["iommu_device"]
    assert int(re.search(r"version (\d+)", facts["qemu"]["version"]).group(1)) >= 10
    done = translations_after_crash(case)
    nic = bdf_of(case, "e1000e")
    assert len(done.get(nic, {})) >= 2, "the NIC's DMA after the crash is in the trace"
    state = collect_iommu(opened(case), [scenario_dir(case) / "capture-dmesg.txt"])
    walks = {m.device: m for m in state.mappings}
    wrong = []
    for bdf, pages in done.items():
        m = walks.get(bdf)
        assert m is not None and m.translation == "first-level", (bdf, m and m.translation)
        for iova, gpa in pages.items():
            got = lookup(m.leaves, iova)
            if got is None or got[0] & ~0xFFF != gpa:
                wrong.append((bdf, hex(iova), hex(gpa), got and hex(got[0])))
    assert not wrong, wrong[:10]


# --- AMD-Vi on 7.x: since 6.18 the capture kernel reuses the crashed kernel's device table
# in place (38e5f33ee359) instead of copying it; sample-dumps/generate --suite sid --scenario amd

AMD_ROOTS = {sc: _root("7.x", sc) for sc in ("amd-copied-traffic", "amd-nocopy")}


def needs_amd(scenario: str):
    return needs_cached(f"7.x stock-kernel {scenario} (sample-dumps/generate --suite sid --scenario amd)",
                        AMD_ROOTS[scenario])


def _amd(scenario: str):
    root = AMD_ROOTS[scenario]
    key = f"7.x/{scenario}"
    if key not in _OPENED:
        dbg = (root / json.loads((root / "manifest.json").read_text())["kernel"]["debug_dir"]).resolve()
        _OPENED[key] = dumpkit.open(cached_dump(root, scenario), debuginfo=[dbg])
    return root / scenario, _OPENED[key]


def _capture_dump(scenario: str):
    root = AMD_ROOTS[scenario]
    entry = next(d for d in json.loads((root / "manifest.json").read_text())["dumps"]
                 if d["scenario"] == scenario and d["kind"] == "capture-kernel dump")
    return dumpkit.open(root / entry["file"], vmcoreinfo=root / entry["vmcoreinfo"])


@needs_amd("amd-copied-traffic")
def test_amd_capture_kernel_reused_the_device_table_in_place_and_says_so():
    """The capture log says "Reused DEV table"; the capture kernel's own state shows its device
    table mapped outside its direct map (the crashed kernel's memory), every entry the crashed
    kernel's, page table for page table; the verdict says reused, not copied."""
    sdir, dump = _amd("amd-copied-traffic")
    log = sdir / "capture-dmesg.txt"
    assert "AMD-Vi: Reused DEV table from previous kernel" in log.read_text()
    state = collect_iommu(dump, [log])
    assert {f.reason for f in state.faults if f.kind == "table-copy"} >= {"attempt", "reused"}
    cap = _capture_dump("amd-copied-traffic")
    cstate = collect_iommu(cap, [])
    assert cstate.units and all(u.flags["tables_reused_in_place"] is True for u in cstate.units)
    assert all(e.copied for e in cstate.entries)
    before = {m.device: m for m in state.mappings}
    for m in cstate.mappings:
        assert (m.root, m.levels) == (before[m.device].root, before[m.device].levels), m.device
    nic_bdf = next(b for b, d in json.loads((sdir / "ground-truth" / "pci.json").read_text())["devices"].items()
                   if d["driver"] == "e1000e")
    v = judge(dump, [log]).get(nic_bdf)
    assert v.did_dma_after_crash.value is True and v.hit_capture_kernel.value is None
    assert "reused the crashed kernel's tables in place" in str(v.hit_capture_kernel)
    text = _dumpkit("--vmcoreinfo", sdir / "capture-vmcoreinfo.txt", "iommu", sdir / "capture-state.kdump").stdout
    assert "reused in place" in text and "tables copied from the previous kernel: yes" not in text


@needs_amd("amd-copied-traffic")
def test_amd_post_crash_translations_are_in_the_walked_tables():
    """From the crash to the capture kernel's /init the NIC's DMA went through the crashed
    kernel's (then reused) tables: each translation QEMU traced is in dumpkit's walk."""
    sdir, dump = _amd("amd-copied-traffic")
    run = json.loads((sdir / "run.json").read_text())
    rx = re.compile(r"^\d+@(\d+\.\d+):amdvi_(?:translation_result|iotlb_hit) devid: "
                    r"([0-9a-f]{2}:[0-9a-f]{2}\.\d) gpa (0x[0-9a-f]+) hpa (0x[0-9a-f]+)", re.M)
    with lzma.open(sdir / "qemu-trace.log.xz", "rt") as f:
        traced = [(d, int(g, 16), int(h, 16)) for t, d, g, h in rx.findall(f.read())
                  if run["crash_epoch"] <= float(t) < run["capture_init_epoch"]]
    assert traced
    walks = {m.device: m for m in collect_iommu(dump, []).mappings}
    wrong = [(d, hex(g)) for d, g, h in traced
             if (hit := lookup(walks[f"0000:{d}"].leaves, g)) is None or hit[0] & ~0xFFF != h & ~0xFFF]
    assert not wrong, wrong[:10]


@needs_amd("amd-nocopy")
def test_amd_nocopy_capture_kernel_failed_to_reuse():
    sdir, dump = _amd("amd-nocopy")
    log = sdir / "capture-dmesg.txt"
    assert "Failed to reuse DEV table from previous kernel" in log.read_text()
    state = collect_iommu(dump, [log])
    assert "failed" in {f.reason for f in state.faults if f.kind == "table-copy"}


@each_scenario()
def test_nvme_commands_in_flight_agree_with_its_completion_queue_and_qemu(case):
    """Two records of one thing in the dump, read from different structures: the block
    layer's requests still in flight whose completion the controller posted (their nvme_iod's
    command id found past the driver's completion-queue head), and the decoder's count of
    completion entries past that head. Each such command QEMU completed (its trace), on the
    queue and with the command id the dump gives."""
    from dumpkit.rings.nvme_inflight import in_flight_commands
    from dumpkit.target.walk import pci_devices

    bdf = bdf_of(case, "nvme")
    prog = opened(case).prog
    pdev = next(p for name, p in pci_devices(prog)[0] if name == bdf)
    cmds = in_flight_commands(prog, pdev)
    assert sum(c.device_completed for c in cmds) == verdicts(case).get(bdf).post_crash_completions
    done = set(re.findall(r"pci_nvme_enqueue_req_completion cid (\d+) cqid (\d+)", trace(case)))
    for c in cmds:
        assert c.opcode in ("read", "write", "flush") and c.data_bytes >= 0
        if c.device_completed:
            assert (str(c.command_id), str(c.qid)) in done, (c.qid, c.command_id)


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs(c)) for c in ROOTS
                                  if scenario_of(c) == "fs-nocopy-fault"])
def test_investigate_notebook_runs_on_the_series(tmp_path, case):
    """Notebook 01 on a newer series' dump (first-stage tables, faults in the capture log
    beside it), with the kernel's debug directory as its parameter."""
    pytest.importorskip("papermill")
    from test_notebooks import outputs, run_notebook

    nb = run_notebook(tmp_path, "01-investigate", {"dump": str(dump_of(case)), "debuginfo": [str(debug_dir(case))]})
    outs = outputs(nb)
    assert any("image/png" in o.get("data", {}) for o in outs), "the tree picture is missing"
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
    text = "".join("".join(o.get("text", "")) for o in outs)
    assert opened(case).info.kernel_release in html + text
    assert bdf_of(case, "e1000e") in html + text and "IOMMU: intel-vtd" in text
