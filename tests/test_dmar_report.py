"""IOMMU end to end on the VT-d samples: faults from the capture logs resolved in the first
kernel, the IOVA allocator view, DataFrames and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from drgn.helpers.linux.pci import for_each_pci_dev

import dumpkit
from conftest import FIRST_KERNEL_DUMPS, SAMPLES, dump_id
from dumpkit.iommu.vtd.iova import collect_iova
from dumpkit.iommu.collect import collect_iommu as collect_dmar
from dumpkit.iommu.render import entries_frame, faults_frame, mappings_frame, units_frame


@pytest.fixture(scope="module")
def nocopy():
    dump = dumpkit.open(SAMPLES / "nocopy-fault" / "vmcore.kdump")
    return dump, collect_dmar(dump, [SAMPLES / "nocopy-fault" / "capture-dmesg.txt"])


def test_nocopy_faults_are_the_nics_and_resolve_in_the_first_kernel(nocopy):
    _dump, state = nocopy
    dma = [c for c in state.correlations if c.fault.kind == "dma-remap"]
    assert dma, "no DMA fault found in the capture log"
    for c in dma:
        assert (c.device, c.driver) == ("0000:02:00.0", "e1000e")
        assert c.phys is not None and c.readable
        assert c.buffer == "e1000e RX descriptor ring"


def test_patched_nocopy_has_no_fault_to_resolve():
    dump = dumpkit.open(SAMPLES / "patched-nocopy" / "vmcore.kdump")
    state = collect_dmar(dump, [SAMPLES / "patched-nocopy" / "capture-dmesg.txt"])
    assert not [f for f in state.faults if f.kind == "dma-remap"]
    assert [f.reason for f in state.faults if f.kind == "table-copy" and f.iommu == "intel-vtd"] == \
           ["attempt", "failed"]


def test_frames(nocopy):
    _dump, state = nocopy
    assert len(units_frame(state)) == 1
    assert len(entries_frame(state)) == len(state.entries) == 19
    assert set(mappings_frame(state)["device"]) == {e.bdf for e in state.entries}
    faults = faults_frame(state)
    row = faults[faults["kind"] == "dma-remap"].iloc[0]
    assert (row["device"], row["buffer"], row["reason_code"]) == ("0000:02:00.0", "e1000e RX descriptor ring", 6)


@pytest.mark.parametrize("entry", FIRST_KERNEL_DUMPS, ids=dump_id)
def test_iova_allocator_is_a_superset_of_the_mappings(entry):
    dump = dumpkit.open(SAMPLES / entry["file"])
    state = collect_dmar(dump)
    leaves = {m.device: m.leaves for m in state.mappings}
    for pdev in for_each_pci_dev(dump.prog):
        alloc = collect_iova(dump.prog, pdev)
        assert not alloc.errors
        name = alloc.device
        if not leaves.get(name) or alloc.granule is None:
            continue
        ranges = sorted((r.start, r.end) for r in alloc.ranges)
        for leaf in leaves[name]:
            assert any(s <= leaf.iova and leaf.iova + leaf.size - 1 <= e for s, e in ranges), (name, hex(leaf.iova))
        assert any(r.reserved == "MSI window" or r.reserved == "PCI window" for r in alloc.ranges)


def test_cli_dmar_uses_the_capture_log_beside_the_dump():
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "dmar", str(SAMPLES / "nocopy-fault" / "vmcore.kdump")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "capture-dmesg.txt" in r.stderr
    assert "e1000e RX descriptor ring" in r.stdout and "dma-remap dmar0 from 02:00.0" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "dmar", "--log", "/nonexistent.log",
                        str(SAMPLES / "idle" / "vmcore.kdump")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "Traceback" not in r.stderr and "/nonexistent.log" in r.stderr
