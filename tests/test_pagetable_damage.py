"""Page-table entries whose structure the format forbids make the walk unknown from that
entry down, never bigger. Built at test time from the samples: one bit flipped in a copy
of the dump (tests/kdump_damage.py rewrites the page), the page-size bit of the entry
that points at the NIC's lower-level table, which then reads as a 1 GiB page at a
4 KiB-aligned address (reserved bits set)."""

from __future__ import annotations

import struct

import pytest
from conftest import SAMPLES
from kdump_damage import rewrite_page

import dumpkit
from dumpkit.iommu.collect import collect_iommu
from dumpkit.verdict import judge

NIC = "0000:02:00.0"
PAGE_SIZE_BIT = 1 << 7


@pytest.mark.parametrize("scenario", ["copied-traffic", "nocopy-fault"])
def test_flipped_page_size_bit_is_damage_not_a_gigabyte(tmp_path, scenario):
    src = SAMPLES / scenario / "vmcore.kdump"
    before = collect_iommu(dumpkit.open(src), []).mapping(NIC)
    assert before.leaves and not before.errors
    top = before.leaves[0].path[0]                       # the top-level entry above its first leaf
    root = before.root & ~0xFFF

    def flip(page: bytes) -> bytes:
        words = list(struct.unpack("<512Q", page))
        words[words.index(top)] |= PAGE_SIZE_BIT
        return struct.pack("<512Q", *words)

    copy = tmp_path / "vmcore.kdump"
    rewrite_page(src, copy, root, flip)
    dump = dumpkit.open(copy)
    after = collect_iommu(dump, []).mapping(NIC)
    assert any("not aligned to its size" in e for e in after.errors), after.errors
    writable = lambda m: sum(r.size for r in m.ranges if r.write)          # noqa: E731
    assert writable(after) <= writable(before)          # never bigger than what the tables mapped
    could = judge(dump).get(NIC).could_dma
    assert could.value is not False
    assert any("damaged" in e for e in could.evidence), could.evidence
