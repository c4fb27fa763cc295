"""The sample factory's CMA crashkernel scenarios (cma-inflight, cma-control) on the 7.x
stock kernel, checked against their own ground truth only: what the guest recorded (the
O_DIRECT reader's ground-truth/cma.json, the kernel's words in cma.txt, kexec-crash.txt),
what the capture kernel booted with (capture-dmesg.txt) and where QEMU's trace says the
NVMe's read data landed (qemu-trace.log.xz, summarised in run.json's "cma" block). The
dumps themselves are the analysis side's. The first tests need no sample: how the generator
defines the scenarios and reads QEMU's trace."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

from conftest import cached_samples, load_generator, needs_cached

PAGE = 4096
CMA_WAIT_S = 10          # kernel/crash_core.c CMA_DMA_TIMEOUT_SEC
SERIES_7X = re.compile(r"7\.")


GEN = load_generator()


def _root() -> Path | None:
    """The newest 7.x sample directory with both CMA scenarios."""
    root = cached_samples("cma-inflight", SERIES_7X)
    if root is None:
        return None
    dumps = json.loads((root / "manifest.json").read_text())["dumps"]
    return root if {"cma-inflight", "cma-control"} <= {d["scenario"] for d in dumps} else None


ROOT = _root()
SAMPLE = needs_cached("7.x stock-kernel cma-inflight and cma-control (sample-dumps/generate --suite sid "
                      "--scenario cma)", ROOT)


def run_json(scenario: str) -> dict:
    return json.loads((ROOT / scenario / "run.json").read_text())


def truth(scenario: str) -> dict:
    return json.loads((ROOT / scenario / "ground-truth" / "cma.json").read_text())


def buffer_pages(t: dict) -> set[int]:
    return {a for start, length in t["buffer"]["phys"] for a in range(start, start + length, PAGE)}


def pages_of(runs) -> set[int]:
    return {a for start, length in runs for a in range(start, start + length, PAGE)}


def in_ranges(addr: int, ranges) -> bool:
    return any(lo <= addr <= hi for lo, hi in ranges)


def usable_memory(scenario: str) -> list[tuple[int, int]]:
    """The capture kernel's RAM as it booted (its e820 map, "System RAM" on 7.x)."""
    log = (ROOT / scenario / "capture-dmesg.txt").read_text(errors="replace")
    return [(int(a, 16), int(b, 16)) for a, b in
            re.findall(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]\s+(?:usable|System RAM)", log)]


# -- the generator, no sample needed ---------------------------------------------------

def test_the_generator_defines_both_scenarios():
    assert GEN.SCENARIO_GROUPS["cma"] == ["cma-inflight", "cma-control"]
    inflight, control = (GEN.SCENARIOS[n] for n in GEN.SCENARIO_GROUPS["cma"])
    assert inflight.crashkernel_args == ["crashkernel=256M", f"crashkernel={GEN.CMA_CRASHKERNEL},cma"]
    assert control.crashkernel_args == ["crashkernel=256M"]
    for sc in (inflight, control):
        assert sc.distro and sc.kexec == "file" and sc.iommu == "none" and sc.guest_ram == "3G"
        assert sc.name not in GEN.SCENARIO_GROUPS["distro"]
    k = GEN.Kernel(Path("/k/bzImage"), Path("/k/vmlinux"), {"kernel_release": "7.2.13+deb14-amd64"})
    cmd = GEN.qemu_command(inflight, k, Path("/i"), Path("/w"), 1)
    assert not [a for a in cmd if "iommu" in a and a.startswith(("intel-iommu", "amd-iommu"))]
    assert f"throttling.bps-read={GEN.CMA_NVME_BPS}" in next(a for a in cmd if a.startswith("file=/w/nvme.img"))
    append = cmd[cmd.index("-append") + 1]
    assert "crashkernel=512M,cma" in append and "dumpkit.cma=inflight" in append and "intel_iommu" not in append
    # the other scenarios' drives are not throttled
    assert "throttling" not in " ".join(GEN.qemu_command(GEN.SCENARIOS["distro-copied-traffic"], k, Path("/i"),
                                                         Path("/w"), 1))


TRACE = """\
100@1.000000:pci_nvme_io_cmd cid 5 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'
100@1.000001:pci_nvme_read cid 5 nsid 1 nlb 16 count 8192 lba 0x20
100@1.000002:pci_nvme_map_prp trans_len 4096 len 8192 prp1 0x100000000 prp2 0x100001000 num_prps 3
100@1.000003:pci_nvme_map_addr addr 0x100000000 len 4096
100@1.000004:pci_nvme_map_addr addr 0x100001000 len 4096
100@1.000005:dma_blk_io dbs=0x5555aaaa bs=0x5555bbbb offset=16384 to_dev=0
100@1.000006:pci_nvme_io_cmd cid 6 nsid 0x1 sqid 1 opc 0x2 opname 'NVME_NVM_CMD_READ'
100@1.000007:pci_nvme_read cid 6 nsid 1 nlb 8 count 4096 lba 0x30
100@1.000008:pci_nvme_map_prp trans_len 4096 len 4096 prp1 0x100005000 prp2 0x0 num_prps 2
100@1.000009:pci_nvme_map_addr addr 0x100005000 len 4096
100@1.000010:dma_blk_io dbs=0x5555cccc bs=0x5555bbbb offset=24576 to_dev=0
100@5.000000:dma_complete dbs=0x5555aaaa ret=0 cb=0x5555dddd
100@5.000001:pci_nvme_rw_cb cid 5 blk 'nvme0'
100@5.000002:pci_nvme_enqueue_req_completion cid 5 cqid 1 dw0 0x0 dw1 0x0 status 0x0
"""


def test_the_trace_reader_keeps_each_command_s_pages_and_completion():
    first, second = GEN.nvme_reads(TRACE)
    assert (first["cid"], first["sqid"], first["lba"], first["length"], first["offset"]) == (5, 1, 0x20, 8192, 16384)
    assert first["segments"] == [[0x100000000, 4096], [0x100001000, 4096]] and first["prp1"] == 0x100000000
    assert first["completed"] == 5.0 and first["status"] == 0
    assert second["segments"] == [[0x100005000, 4096]] and second["completed"] is None
    assert GEN.coalesce(first["segments"]) == [[0x100000000, 8192]]


# -- the samples -----------------------------------------------------------------------

@SAMPLE
def test_the_cma_range_is_the_one_the_kernel_printed():
    t = truth("cma-inflight")
    (start, end), = t["cma_ranges"]
    assert t["cma_ranges_text"].strip() == f"{start:x}-{end:x}"
    said = (ROOT / "cma-inflight" / "ground-truth" / "cma.txt").read_text()
    size_mib = (end - start + 1) >> 20
    assert f"cma: Reserved {size_mib} MiB at {start:#018x}" in said
    assert f"crashkernel CMA reserved: {size_mib} MB in 1 ranges" in said
    assert f"kexec_crash_cma_ranges {start:x}-{end:x}" in said
    # beside the usual reservation, apart from it
    (lo, hi), = [(int(a, 16), int(b, 16)) for a, b in run_json("cma-inflight")["crash_image"]["crash_reservation"]]
    assert hi < start or lo > end
    assert run_json("cma-inflight")["cma"]["cma_ranges"] == t["cma_ranges"]


@SAMPLE
def test_the_buffer_lies_inside_the_cma_range():
    t = truth("cma-inflight")
    pages = buffer_pages(t)
    assert len(pages) == t["buffer"]["pages"] == t["buffer"]["size"] // PAGE == t["read"]["length"] // PAGE
    assert all(in_ranges(a, t["cma_ranges"]) and in_ranges(a + PAGE - 1, t["cma_ranges"]) for a in pages)
    assert t["buffer"]["pages_in_cma"] == len(pages) and t["buffer"]["moved_since_probe"] == 0
    assert t["read"]["flags"] == "O_RDONLY|O_DIRECT" and t["read"]["done_at_truth"] is False


@SAMPLE
def test_the_capture_kernel_booted_on_the_cma_range():
    usable = usable_memory("cma-inflight")
    for lo, hi in truth("cma-inflight")["cma_ranges"]:
        assert any(a <= lo and hi <= b for a, b in usable), (hex(lo), hex(hi), usable)
    assert run_json("cma-inflight")["cma"]["cma_ranges_usable_in_capture_kernel"] is True
    # __crash_kexec() waited CMA_DMA_TIMEOUT_SEC before jumping to it
    assert run_json("cma-inflight")["cma"]["capture_kernel_started_after_crash_s"] >= CMA_WAIT_S


def post_crash_writes_from_the_trace(scenario: str) -> list[dict]:
    """The NVMe read commands into the buffer whose data QEMU put into memory after the
    crash, read from the trace here (not from run.json)."""
    facts = run_json(scenario)
    pages = buffer_pages(truth(scenario))
    with lzma.open(ROOT / scenario / "qemu-trace.log.xz", "rt") as f:
        cmds = GEN.nvme_reads(f.read())
    ours = [c for c in cmds if c["segments"] and pages_of(c["segments"]) <= pages]
    assert ours, "QEMU traced no read command into the buffer"
    assert {c["length"] for c in ours} and sum(c["length"] for c in ours) == truth(scenario)["read"]["length"]
    return [c for c in ours if c["completed"] is not None and c["completed"] >= facts["crash_epoch"]]


@SAMPLE
def test_qemu_s_post_crash_writes_hit_the_cma_buffer_after_the_wait_while_the_capture_kernel_ran():
    facts = run_json("cma-inflight")
    t = truth("cma-inflight")
    crash = facts["crash_epoch"]
    started = crash + facts["cma"]["capture_kernel_started_after_crash_s"]
    done = facts["capture_done_epoch"]
    writes = post_crash_writes_from_the_trace("cma-inflight")
    assert writes, "no NVMe data write after the crash"
    for c in writes:
        assert all(in_ranges(a, t["cma_ranges"]) for a in pages_of(c["segments"]))
    hits = [c for c in writes if c["completed"] - crash > CMA_WAIT_S and started < c["completed"] < done]
    assert hits, "no write more than 10 s after the crash while the capture kernel ran"
    # run.json says the same, command for command
    recorded = {(w["cid"], w["lba"]): w for w in facts["cma"]["post_crash_data_writes"]}
    assert {(c["cid"], c["lba"]) for c in writes} == set(recorded)
    for c in hits:
        w = recorded[(c["cid"], c["lba"])]
        assert w["inside_cma"] and w["inside_capture_kernel_memory"] and w["while_capture_kernel_ran"]
        assert w["landed_after_crash_s"] > CMA_WAIT_S and w["landed_after_capture_start_s"] > 0
        assert GEN.coalesce(c["segments"]) == w["pages"]


@SAMPLE
def test_the_control_has_no_cma_range_and_its_write_lands_in_the_crashed_kernel_s_memory():
    facts = run_json("cma-control")
    t = truth("cma-control")
    assert t["cma_ranges"] == [] and t["cma_ranges_text"].strip() == ""
    said = (ROOT / "cma-control" / "ground-truth" / "cma.txt").read_text()
    assert "crashkernel CMA reserved" not in said and "crashkernel=512M,cma" not in said
    reservation = [(int(a, 16), int(b, 16)) for a, b in facts["crash_image"]["crash_reservation"]]
    usable = usable_memory("cma-control")
    writes = post_crash_writes_from_the_trace("cma-control")
    assert writes, "no NVMe data write after the crash"
    for c in writes:
        for a in pages_of(c["segments"]):
            assert not in_ranges(a, reservation) and not in_ranges(a, usable), hex(a)
    assert not any(w["inside_crash_reservation"] or w["inside_cma"] for w in facts["cma"]["post_crash_data_writes"])
