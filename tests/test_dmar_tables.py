"""VT-d units and context entries read from the dumps against the guests' debugfs."""

from __future__ import annotations

import pytest

import dumpkit
from conftest import DUMPS, SAMPLES, dump_id, dump_path
from dumpkit.dmar.tables import collect_context_entries
from dumpkit.dmar.units import collect_units

VMCORE_AND_CAPTURE = [d for d in DUMPS if d["kind"] in ("first-kernel vmcore", "capture-kernel dump")]


def truth_dir(entry):
    return SAMPLES / entry["scenario"] / ("capture-ground-truth" if entry["kind"] == "capture-kernel dump"
                                          else "ground-truth")


def debugfs_view(entries, unit):
    """What 6.1's dmar_translation_struct prints of our entries: per bus, devfns in order
    until the first one whose context is copied or whose table is absent
    (iommu_context_addr() returns NULL and ctx_tbl_walk() returns)."""
    copied = set(unit.copied_tables or [])
    by_key = {}
    for e in entries:
        by_key.setdefault((e.bus, e.devfn), []).append(e)
    shown = []
    for bus in range(256):
        root_lo_hi = next((e.root for e in entries if e.bus == bus), None)
        if root_lo_hi is None:
            continue
        hi, lo = root_lo_hi
        for devfn in range(256):
            table_present = (hi if unit.scalable_mode and devfn >= 0x80 else lo) & 1
            if (bus, devfn) in copied or not table_present:
                break
            shown.extend(by_key.get((bus, devfn), []))
    return shown


@pytest.fixture(scope="module", params=VMCORE_AND_CAPTURE, ids=dump_id)
def case(request):
    entry = request.param
    dump = dumpkit.open(dump_path(entry))
    units = collect_units(dump.prog)
    return entry, dump, units, collect_context_entries(dump.prog, units)


def test_one_unit_with_its_root_table_address(case):
    entry, _dump, units, _entries = case
    header = (truth_dir(entry) / "dmar_translation_struct.txt").read_text().splitlines()[0]
    (unit,) = units
    assert header == f"IOMMU {unit.name}: Root Table Address: {unit.root_table:#x}"
    assert unit.register_base == 0xFED90000 and unit.cap_decoded["caching_mode"]
    assert unit.translation_on


def test_context_entries_equal_debugfs_entry_for_entry(case):
    entry, _dump, units, entries = case
    (unit,) = units
    truth = [line.rstrip() for line in (truth_dir(entry) / "dmar_translation_struct.txt").read_text().splitlines()[2:]
             if line.strip()]
    assert [e.debugfs_line().rstrip() for e in debugfs_view(entries, unit)] == truth
    assert not [e.errors for e in entries if e.errors]


def test_every_pci_function_has_a_context_entry_and_its_kernel_domain(case):
    entry, dump, units, entries = case
    bdfs = {e.bdf for e in entries}
    assert bdfs == {d.bdf for d in dump.pci()}
    for e in entries:
        if not e.copied:
            assert e.device == e.bdf
            assert e.domain_type in ("DMA", "DMA_FQ", "IDENTITY", "UNMANAGED", "BLOCKED")
            assert e.kernel_domain_id == e.domain_id


def test_scalable_mode_where_the_first_kernel_asked_for_it(case):
    entry, _dump, units, entries = case
    sm = entry["scenario"] in ("nocopy-fault", "patched-nocopy") and entry["kind"] == "first-kernel vmcore"
    assert units[0].scalable_mode is sm
    assert all(e.scalable_mode is sm for e in entries)
    if sm:
        assert all(e.pasid == 0 and e.translation == "second-level" for e in entries)


def test_copied_entries_in_capture_kernels(case):
    entry, _dump, units, entries = case
    copied = {e.bdf for e in entries if e.copied}
    if entry["kind"] == "capture-kernel dump" and entry["scenario"] in ("copied-traffic", "patched-copied"):
        assert units[0].translation_pre_enabled
        # the drivers that mapped DMA in the capture kernel took their devices over
        assert "0000:03:00.0" not in copied and "0000:06:00.0" not in copied
        assert "0000:02:00.0" in copied and "0000:08:00.0" in copied
    else:
        assert copied == set()
