"""crashkernel=,cma (6.17+) read from a real 7.x vmcore: the CMA ranges, pages of them named
as lent to the capture kernel (never damage), and the NVMe reads the crashed kernel never saw
complete whose destination pages lie in them, against QEMU's trace of where the data landed
after the crash (sample-dumps/generate --suite sid --scenario cma; the sample's own checks
are in test_cma_sample.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import drgn
import pytest
from conftest import cached_dump, cached_samples, needs_cached

import dumpkit

SERIES = re.compile(r"7\.")
ROOT = cached_samples("cma-inflight", SERIES)
CONTROL = cached_samples("cma-control", SERIES)


def _debug(root):
    return (root / json.loads((root / "manifest.json").read_text())["kernel"]["debug_dir"]).resolve()


def _run(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dumpkit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def inflight():
    dump = cached_dump(ROOT, "cma-inflight")
    return dump, _debug(ROOT), json.loads((ROOT / "cma-inflight" / "run.json").read_text())["cma"]


@needs_cached("cma-inflight (7.x)", ROOT)
def test_info_lists_the_cma_ranges_the_guest_printed(inflight):
    dump, debug, cma = inflight
    info = json.loads(_run("--debuginfo", debug, "info", dump, "--json").stdout)["kdump"]
    guest = [tuple(int(x, 16) for x in line.split("-")) for line in cma["cma_ranges_text"].split()]
    assert [tuple(r) for r in info["crash_kernel_cma"]] == guest
    text = _run("--debuginfo", debug, "info", dump).stdout
    assert "crash CMA ranges:" in text and f"{guest[0][0]:#x}-{guest[0][1]:#x}" in text
    # the memory map is in the dump though the pages are not: every page QEMU wrote after the
    # crash was pinned for the O_DIRECT read (FOLL_PIN) when the kernel died
    traced = sum(size // 4096 for w in cma["post_crash_data_writes"] for _start, size in w["pages"])
    assert info["crash_kernel_cma_pinned"] >= traced > 0
    assert f"{info['crash_kernel_cma_pinned']} pages of them pinned for DMA" in text


@needs_cached("cma-inflight (7.x)", ROOT)
def test_a_page_of_the_range_is_lent_to_the_capture_kernel_not_damage(inflight):
    from dumpkit.target.pagemap import missing_page_reason, page_presence

    dump, debug, cma = inflight
    d = dumpkit.open(dump, debuginfo=[debug])
    truth = json.loads((ROOT / "cma-inflight" / "ground-truth" / "cma.json").read_text())
    page = truth["buffer"]["phys"][0][0]
    with pytest.raises(drgn.FaultError):        # the vmcore leaves the range out
        d.prog.read(page, 8, True)
    why = missing_page_reason(d.prog, page)
    assert "lent to the capture kernel" in why and "not damage" in why and "not RAM" not in why
    assert page_presence(d.prog, page)[0] == "capture CMA"


@needs_cached("cma-inflight (7.x)", ROOT)
def test_the_reads_qemu_completed_after_the_crash_are_the_ones_found_pointing_into_cma(inflight):
    """Every read QEMU completed after the crash (trace: command id, queue, the pages its
    data went to) is a read the dump shows the kernel never saw complete, with each of its
    destination pages inside the CMA range; the four that landed while the capture kernel
    ran are among them."""
    from dumpkit.rings.nvme_inflight import data_pages, in_flight_commands
    from dumpkit.target.walk import pci_devices

    dump, debug, cma = inflight
    v = json.loads(_run("--debuginfo", debug, "verdict", dump, "--json").stdout)
    nvme = next(e for e in v["endpoints"] if e["driver"] == "nvme")
    found = {(c["qid"], c["command_id"]): c for c in nvme["capture_cma"]["commands"]}
    writes = cma["post_crash_data_writes"]
    assert writes and {(w["sqid"], w["cid"]) for w in writes} <= set(found)
    assert sum(w["while_capture_kernel_ran"] for w in writes) == cma["post_crash_writes_into_cma_while_capture_kernel_ran"] > 0
    assert "DMA target inside the capture kernel's CMA memory" in nvme["hit_capture_kernel_evidence"]
    assert nvme["hit_capture_kernel"] is not False
    d = dumpkit.open(dump, debuginfo=[debug])
    pdev = next(p for name, p in pci_devices(d.prog)[0] if name == nvme["bdf"])
    cmds = {(c.qid, c.command_id): c for c in in_flight_commands(d.prog, pdev)}
    for w in writes:
        pages, why = data_pages(d.prog, cmds[(w["sqid"], w["cid"])], lambda a: a)    # no IOMMU: physical
        assert why is None
        traced = sorted(p for start, size in w["pages"] for p in range(start, start + size, 4096))
        assert sorted(pages) == traced, w["cid"]
        assert found[(w["sqid"], w["cid"])]["pages_inside"] == len(traced)
    # the other endpoints name nothing inside
    assert all(e["capture_cma"]["pages"] == 0 for e in v["endpoints"] if e["driver"] != "nvme")


@needs_cached("cma-control (7.x)", CONTROL)
def test_without_cma_nothing_changes():
    dump, debug = cached_dump(CONTROL, "cma-control"), _debug(CONTROL)
    v = json.loads(_run("--debuginfo", debug, "verdict", dump, "--json").stdout)
    assert all("capture_cma" not in e for e in v["endpoints"])
    assert not any("CMA" in e["hit_capture_kernel_evidence"] for e in v["endpoints"])
    info = json.loads(_run("--debuginfo", debug, "info", dump, "--json").stdout)["kdump"]
    assert info["crash_kernel_cma"] == [] and info["crash_kernel_cma_pinned"] is None
