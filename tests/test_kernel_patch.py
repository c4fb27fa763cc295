"""kernel-patches/: the port-reset patch applies, passes checkpatch, builds the committed
kernel, and does in the patched scenarios what it says."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import MANIFEST, REPO, SAMPLES, capture_log, ground_truth_pci
from test_sample_dumps import DMAR_FAULT

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
PATCHES = sorted((REPO / "kernel-patches" / "patches").glob("*.patch"))
RESET = re.compile(r"pci (\S+): kdump: secondary bus reset to stop in-flight DMA")
NOT_RESET = re.compile(r"pci (\S+): kdump: not reset: (.+)")


def installed_source_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "linux-source-6.1"],
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def source_subset(tmp_path_factory) -> Path:
    """The files the patch touches plus checkpatch, unpacked from Debian's tarball."""
    if not TARBALL.exists():
        pytest.fail(f"{TARBALL} missing: install linux-source-6.1 (scripts/setup does)")
    touched = set()
    for patch in PATCHES:
        touched |= set(re.findall(r"^--- a/(\S+)", patch.read_text(), re.MULTILINE))
    wanted = touched | {"scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch"}
    dest = tmp_path_factory.mktemp("linux")
    with tarfile.open(TARBALL) as tar:
        members = [m for m in tar if m.name.split("/", 1)[-1] in wanted]
        tar.extractall(dest, members=members, filter="data")
    (root,) = dest.iterdir()
    return root


def test_patch_targets_the_recorded_source_version():
    recorded = MANIFEST["kernel"]["source_version"]
    installed = installed_source_version()
    if installed != recorded:
        pytest.skip(f"installed linux-source-6.1 is {installed}, the samples were built from {recorded}")
    assert MANIFEST["kernel"]["patches"] == [p.name for p in PATCHES]


def test_patch_applies_with_patch_p1(source_subset):
    for patch in PATCHES:
        r = subprocess.run(["patch", "-p1", "--dry-run", "-d", str(source_subset), "-i", str(patch)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_checkpatch_strict_has_no_errors(source_subset):
    for patch in PATCHES:
        r = subprocess.run(["perl", str(source_subset / "scripts/checkpatch.pl"), "--strict", "--no-tree",
                            str(patch)], capture_output=True, text=True)
        total = re.search(r"total: (\d+) errors, (\d+) warnings, (\d+) checks", r.stdout)
        assert total, r.stdout + r.stderr
        assert total.group(1) == "0", r.stdout


def ports_that_must_be_reset(scenario: str) -> tuple[set[str], set[str]]:
    """(ports with devices below and no VGA below, ports with VGA below) from ground truth."""
    devs = ground_truth_pci(scenario)

    def below(port: str) -> list[dict]:
        kids = [d for d in devs.values() if d["parent_bridge"] == port]
        return kids + [g for k in kids for g in below(k["bdf"])]

    reset, vga = set(), set()
    for bdf, d in devs.items():
        if d["pcie_port_type"] not in ("root_port", "downstream_port"):
            continue
        sub = below(bdf)
        if any(k["class"] >> 8 == 0x0300 for k in sub):
            vga.add(bdf)
        elif sub:
            reset.add(bdf)
    return reset, vga


@pytest.mark.parametrize("scenario", ["patched-nocopy", "patched-copied"])
def test_patched_capture_kernel_resets_every_non_vga_port_with_devices(scenario):
    log = capture_log(scenario)
    must_reset, vga = ports_that_must_be_reset(scenario)
    assert must_reset, "ground truth has no port to reset"
    assert set(RESET.findall(log)) == must_reset
    skipped = dict(NOT_RESET.findall(log))
    assert {b for b, why in skipped.items() if why == "VGA below"} == vga


def test_patched_nocopy_has_no_dmar_fault_where_nocopy_fault_has_some():
    assert DMAR_FAULT.search(capture_log("nocopy-fault"))
    assert "Failed to copy translation tables" in capture_log("patched-nocopy")
    assert not DMAR_FAULT.search(capture_log("patched-nocopy"))


@pytest.mark.parametrize("scenario", ["copied-traffic", "nocopy-fault", "idle"])
def test_unpatched_scenarios_switch_the_reset_off(scenario):
    log = capture_log(scenario)
    assert "pci=nokdumpreset" in log
    assert not RESET.search(log)


@pytest.mark.slow
def test_building_from_the_patch_reproduces_the_committed_kernel():
    """The build is reproducible (fixed timestamp, user, host, source paths mapped away),
    so the patched build must give the committed build-id. Cached by input hash."""
    recorded, installed = MANIFEST["kernel"]["source_version"], installed_source_version()
    if installed != recorded:
        pytest.skip(f"installed linux-source-6.1 is {installed}; the committed kernel is from {recorded}")
    out = subprocess.run([str(REPO / "kernel-patches" / "build"), "--patched"], capture_output=True,
                         text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads((Path(out.stdout.strip().splitlines()[-1]) / "build-info.json").read_text())
    assert info["build_id"] == MANIFEST["kernel"]["build_id"]
    assert info["source_version"] == MANIFEST["kernel"]["source_version"]
    assert (SAMPLES / MANIFEST["kernel"]["bzimage"]).is_file()
