"""VT-d units and context entries read from the dumps against the guests' debugfs."""

from __future__ import annotations

import pytest

import dumpkit
from conftest import DUMPS, SAMPLES, dump_id, dump_path
from dumpkit.iommu.vtd.tables import collect_context_entries
from dumpkit.iommu.vtd.units import collect_units

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


# --- page tables ----------------------------------------------------------------------

def debugfs_mapping_lines(prog) -> dict[str, set[str]]:
    """Our walk of each group's domain, in domain_translation_struct's row format."""
    from dumpkit.iommu.vtd.mappings import kernel_domain_roots
    from dumpkit.iommu.vtd.pagetable import walk_page_table

    out: dict[str, set[str]] = {}
    for first, pgd, levels in kernel_domain_roots(prog).values():
        rows = out.setdefault(first, set())
        for leaf in walk_page_table(prog, pgd, levels).leaves:
            path = [0] * (5 - levels) + list(leaf.path) + [0] * (leaf.level - 1)
            rows.add(f"0x{leaf.iova >> 12:013x} |\t" + "\t".join(f"0x{v:016x}" for v in path))
    return out


def truth_mapping_lines(entry) -> dict[str, set[str]]:
    import lzma

    out: dict[str, set[str]] = {}
    rows = None
    with lzma.open(truth_dir(entry) / "domain_translation_struct.txt.xz", "rt") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("Device "):
                rows = out.setdefault(line.split()[1], set())
            elif line.startswith("0x") and rows is not None:
                rows.add(line)
    return out


def test_mappings_agree_with_debugfs(case):
    """Capture kernels were quiescent when both were taken: equal for every device. The
    first kernel's ground truth was taken about half a second before the crash while the
    NIC received (its driver remaps RX buffers) and the NVMe was read, so for those two
    only most of the debugfs mappings must still be there; all other devices are equal."""
    entry, dump, _units, _entries = case
    mine, truth = debugfs_mapping_lines(dump.prog), truth_mapping_lines(entry)
    assert set(mine) == set(truth)
    busy = set() if entry["kind"] == "capture-kernel dump" else {"0000:02:00.0", "0000:03:00.0"}
    for dev in truth:
        if dev in busy:
            assert len(mine[dev] & truth[dev]) >= 0.5 * len(truth[dev]), dev
        else:
            assert mine[dev] == truth[dev], dev


def test_device_mappings_and_lookup(case):
    from dumpkit.iommu.vtd.mappings import collect_device_mappings
    from dumpkit.iommu.vtd.pagetable import lookup

    _entry, dump, _units, entries = case
    for dm in collect_device_mappings(dump.prog, entries):
        assert not dm.errors, dm.errors
        if not dm.leaves:
            continue
        assert dm.summary["pages"] == len(dm.leaves)
        assert dm.summary["bytes"] == sum(r.size for r in dm.ranges) == sum(x.size for x in dm.leaves)
        for leaf in dm.leaves[:50]:
            assert lookup(dm.leaves, leaf.iova + 123) == (leaf.phys + 123, leaf.read, leaf.write)
        last = max(dm.leaves, key=lambda x: x.iova)
        assert lookup(dm.leaves, last.iova + last.size) is None


@pytest.mark.parametrize("damage", ["loop", "outside RAM"])
def test_corrupt_page_table_gives_errors_not_a_hang(tmp_path, damage):
    """A copy of the ELF vmcore with the NIC's top-level PTE pointed back at its own table
    (a loop) or past the end of RAM."""
    import shutil
    import struct

    from conftest import ELF_DUMPS
    from dumpkit.iommu.vtd.pagetable import walk_page_table
    from test_bad_input import _patch_elf_phys

    broken = tmp_path / "vmcore.elf"
    shutil.copy(dump_path(ELF_DUMPS[0]), broken)
    prog = dumpkit.open(broken).prog
    (nic,) = [e for e in collect_context_entries(prog, collect_units(prog)) if e.bdf == "0000:02:00.0"]
    root = nic.page_table
    page = prog.read(root, 4096, True)
    index = next(i for i in range(512) if struct.unpack_from("<Q", page, i * 8)[0] & 3)
    pte = struct.unpack_from("<Q", page, index * 8)[0]
    target = root if damage == "loop" else 0x7F_FFFF_F000
    _patch_elf_phys(broken, root + index * 8, struct.pack("<Q", target | (pte & 0xFFF)))
    prog = dumpkit.open(broken).prog
    walk = walk_page_table(prog, root, 3)
    assert walk.errors
    assert ("referenced twice" if damage == "loop" else "unreadable in the dump") in walk.errors[0]
