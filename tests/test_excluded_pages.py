"""A page the dump level left out is told apart from a damaged one. The case is built
the way makedumpfile builds it: a copy of a sample with one page's bit cleared in the
second kdump bitmap and its descriptor gone (tests/kdump_damage.py), here the page that
holds the NIC's ``struct pci_dev``, the page drgn needs first in the PCI walk (what a
makedumpfile older than the kernel drops at -d 31)."""

from __future__ import annotations

import pytest
from conftest import SAMPLES, run_cli
from drgn.helpers.linux.mm import follow_phys
from kdump_damage import damage_page, exclude_page, page_descriptor

import dumpkit
from dumpkit.target.pagemap import missing_page_reason
from dumpkit.target.walk import pci_devices

SAMPLE = SAMPLES / "nocopy-fault" / "vmcore.kdump"
NIC = "0000:02:00.0"


@pytest.fixture(scope="module")
def nic_page() -> int:
    prog = dumpkit.open(SAMPLE).prog
    pdev = dict(pci_devices(prog)[0])[NIC]
    return follow_phys(prog["init_mm"].address_of_(), pdev.value_()).value_() & ~0xFFF


def test_bitmap_states_of_the_sample(nic_page):
    prog = dumpkit.open(SAMPLE).prog
    assert missing_page_reason(prog, nic_page) is None          # present: nothing to say
    # the first bitmap: the legacy VGA window below 1 MiB is no RAM
    assert "not RAM" in missing_page_reason(prog, 0xa0000)


@pytest.mark.parametrize("how", ["excluded", "damaged"])
def test_excluded_page_is_named_as_the_dump_levels_not_damage(tmp_path, nic_page, how):
    copy = tmp_path / "vmcore.kdump"
    (exclude_page if how == "excluded" else damage_page)(SAMPLE, copy, nic_page)
    assert (page_descriptor(copy, nic_page) is None) == (how == "excluded")
    prog = dumpkit.open(copy).prog
    reason = missing_page_reason(prog, nic_page)
    r = run_cli("verdict", str(copy), "--json")
    assert "Traceback" not in r.stderr
    said = r.stdout + r.stderr
    if how == "excluded":
        assert reason and "dump level excluded it" in reason and "-d 31" in reason and "-d 23" in reason
        assert "dump level excluded it (the kdump page bitmap says so)" in said, said[-3000:]
        assert f"page {nic_page:#x}" in said
    else:
        # a page that is there but does not decompress is damage, never the dump level's
        assert reason is None
        assert "dump level" not in said
