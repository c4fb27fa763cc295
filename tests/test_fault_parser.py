"""The IOMMU fault-log parser: on the sample logs, on every format generation, and on
arbitrary text (hypothesis)."""

from __future__ import annotations

import functools
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dumpkit
from conftest import SAMPLES, capture_log, ground_truth_pci
from dumpkit.iommu.faults import LINE_MAX, parse_log, parse_printk
from dumpkit.iommu.vtd.reasons import vtd_fault_reason


def key(r):
    return (r.kind, r.requester_bdf, r.pasid, r.address, r.access, r.reason_code, r.reason)


# --- the sample logs ---------------------------------------------------------------------

def test_nocopy_fault_capture_log():
    recs = parse_log(capture_log("nocopy-fault"), "capture-dmesg.txt")
    faults = [r for r in recs if r.kind == "dma-remap"]
    nic = next(b for b, d in ground_truth_pci("nocopy-fault").items() if d["driver"] == "e1000e")
    assert faults and all(f.requester == nic[5:] for f in faults)
    f = faults[0]
    assert (f.access, f.reason_code, f.reason, f.unit) == ("read", 6, "PTE Read access is not set", "dmar0")
    assert f.time is not None and f.source == "capture-dmesg.txt"
    assert f.detail["table_dump"][0].startswith("root entry: ")
    assert any(line.startswith("pte level:") for line in f.detail["table_dump"])
    copies = [r.reason for r in recs if r.kind == "table-copy" and r.iommu == "intel-vtd"]
    assert copies == ["attempt", "failed"]
    status = [r for r in recs if r.kind == "fault-status"]
    assert status and "PPF" in status[0].detail["bits"]


def test_copied_traffic_capture_log_has_copies_and_no_faults():
    recs = parse_log(capture_log("copied-traffic"))
    assert not [r for r in recs if r.kind in ("dma-remap", "intr-remap")]
    assert [r.reason for r in recs if r.kind == "table-copy" and r.iommu == "intel-vtd"] == ["attempt", "copied"]
    assert any(r.iommu == "intel-vtd-ir" and r.reason == "copied" for r in recs)


def test_serial_console_and_printk_give_the_same_faults_as_dmesg():
    text = [key(r) for r in parse_log(capture_log("nocopy-fault")) if r.kind == "dma-remap"]
    console = [key(r) for r in parse_log((SAMPLES / "nocopy-fault" / "console.log").read_text())
               if r.kind == "dma-remap"]
    printk = [key(r) for r in parse_printk(dumpkit.open(SAMPLES / "nocopy-fault" / "capture-state.kdump").prog)
              if r.kind == "dma-remap"]
    assert text and console == text and printk == text


# --- every VT-d format generation ------------------------------------------------------------

def render_vtd(fmt: str, bus: int, dev: int, fn: int, addr: int, read: bool, reason: int,
               pasid: int | None) -> list[str]:
    """A DMA-remapping fault as each kernel generation printed it."""
    rw = "DMA Read" if read else "DMA Write"
    text = vtd_fault_reason(reason)[1]
    if fmt == "2.6-4.1":
        return [f"DMAR:[{rw}] Request device [{bus:02x}:{dev:02x}.{fn}] fault addr {addr:x} ",
                f"DMAR:[fault reason {reason:02d}] {text}"]
    if fmt == "4.2-5.4":
        return [f"DMAR: [{rw}] Request device [{bus:02x}:{dev:02x}.{fn}] fault addr {addr:x} "
                f"[fault reason {reason:02d}] {text}"]
    if fmt == "5.5-5.13":
        return [f"DMAR: [{rw}] Request device [{bus:02x}:{dev:02x}.{fn}] PASID {pasid if pasid is not None else 0xFFFFFFFF:x} "
                f"fault addr {addr:x} [fault reason {reason:02d}] {text}"]
    tag = "NO_PASID" if pasid is None else f"PASID 0x{pasid:x}"
    if fmt == "5.14":
        return [f"DMAR: [{rw} {tag}] Request device [0x{bus:02x}:0x{dev:02x}.{fn}] fault addr 0x{addr:x} "
                f"[fault reason 0x{reason:02x}] {text}"]
    return [f"DMAR: [{rw} {tag}] Request device [{bus:02x}:{dev:02x}.{fn}] fault addr 0x{addr:x} "
            f"[fault reason 0x{reason:02x}] {text}"]


PREFIXES = ["", "[    1.097283] ", "<3>[  512.000001] ", "Nov 23 23:37:20 host kernel: [ 8.5] ",
            "Nov 23 23:37:20 host kernel: ", "2026-11-23T23:37:20.123456+00:00 host kernel: "]
FORMATS = ["2.6-4.1", "4.2-5.4", "5.5-5.13", "5.14", "5.15+"]
DMA_REASONS = list(range(0x0E)) + [0x39, 0x41, 0x59, 0x79]


@settings(max_examples=150, deadline=None)
@given(bus=st.integers(0, 255), dev=st.integers(0, 31), fn=st.integers(0, 7),
       page=st.integers(0, (1 << 45) - 1), read=st.booleans(), reason=st.sampled_from(DMA_REASONS),
       prefix=st.sampled_from(PREFIXES))
def test_every_vtd_format_parses_to_the_same_record(bus, dev, fn, page, read, reason, prefix):
    addr = page << 12
    records = []
    for fmt in FORMATS:
        if fmt in ("2.6-4.1", "4.2-5.4", "5.5-5.13") and reason > 99:
            continue  # printed as %02d there
        lines = [prefix + line for line in render_vtd(fmt, bus, dev, fn, addr, read, reason, None)]
        (rec,) = [r for r in parse_log("\n".join(lines)) if r.kind == "dma-remap"]
        records.append((fmt, key(rec)))
    expected = ("dma-remap", f"{bus:02x}:{dev:02x}.{fn}", None, addr, "read" if read else "write", reason,
                vtd_fault_reason(reason)[1])
    assert all(k == expected for _fmt, k in records), records


def test_pasid_forms():
    for fmt in ("5.14", "5.15+"):
        (rec,) = parse_log("\n".join(render_vtd(fmt, 0, 2, 0, 0x1000, False, 5, 2)))
        assert rec.pasid == 2 and rec.access == "write"
    (rec,) = parse_log("\n".join(render_vtd("5.5-5.13", 0, 2, 0, 0x1000, True, 5, 7)))
    assert rec.pasid == 7


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_on_arbitrary_text(text):
    parse_log(text)


@given(st.lists(st.sampled_from([
    "DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0x",
    "DMAR:[fault reason ", "DMAR: Dump dmar0 table entries for IOVA 0x", "AMD-Vi: Event logged [",
    "event 0x10 received:", "\t0x", "AER: Corrected error received: ", "[ 1.0] ", "]", "zz", "0", "\n",
    "Request device [[", "fault index 0x", "callbacks suppressed",
])))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_on_fragments_of_real_lines(parts):
    parse_log("".join(parts))


# --- the other formats ------------------------------------------------------------------

@pytest.mark.parametrize("line,expected", [
    ("DMAR: [INTR-REMAP] Request device [f0:1f.0] fault index 0x21 [fault reason 0x22] "
     "Present field in the IRTE entry is clear", ("intr-remap", "f0:1f.0", 0x22, 0x21)),
    ("DMAR: [INTR-REMAP] Request device [0xf0:0x1f.0] fault index 0x21 [fault reason 0x22] "
     "Present field in the IRTE entry is clear", ("intr-remap", "f0:1f.0", 0x22, 0x21)),
    ("DMAR: [INTR-REMAP] Request device [f0:1f.0] fault index 21 [fault reason 34] "
     "Present field in the IRTE entry is clear", ("intr-remap", "f0:1f.0", 0x22, 0x21)),
    ("INTR-REMAP: Request device [[f0:1f.0] fault index 21\nINTR-REMAP:[fault reason 34] "
     "Present field in the IRTE entry is clear", ("intr-remap", "f0:1f.0", 0x22, 0x21)),
])
def test_interrupt_remapping_faults(line, expected):
    (rec,) = parse_log(line)
    assert (rec.kind, rec.requester, rec.reason_code, rec.detail["irte_index"]) == expected
    assert rec.reason == "Present field in the IRTE entry is clear"


def test_status_suppressed_and_copy_lines():
    recs = parse_log("DMAR: DRHD: handling fault status reg 102\n"
                     "dmar_fault: 91 callbacks suppressed\n"
                     "DRHD: handling fault status reg 3\n"
                     "DMAR: dmar1: Failed to copy context table for bus 3\n"
                     "DMAR: Translation was enabled for dmar0 but we are not in kdump mode\n"
                     "AMD-Vi: Copied DEV table from previous kernel.\n")
    assert recs[0].detail == {"fsts": 0x102, "bits": ["PPF"], "fault_record_index": 1}
    assert recs[1].detail["suppressed"] == 91
    assert recs[2].detail["bits"] == ["PFO", "PPF"]
    assert (recs[3].reason, recs[3].unit, recs[3].detail["bus"]) == ("failed-bus", "dmar1", 3)
    assert recs[4].reason == "not-kdump"
    assert (recs[5].iommu, recs[5].reason) == ("amd-vi", "copied")


@pytest.mark.parametrize("line", [
    "AMD-Vi: Event logged [IO_PAGE_FAULT device=07:00.1 domain=0x000e address=0x00000000fdf9a000 flags=0x0010]",
    "nvme 0000:07:00.1: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x000e address=0x00000000fdf9a000 flags=0x0010]",
    "AMD-Vi: Event logged [IO_PAGE_FAULT device=0000:07:00.1 domain=0x000e address=0x00000000fdf9a000 flags=0x0010]",
])
def test_amd_io_page_fault_in_all_three_forms(line):
    (rec,) = parse_log("[ 5.1] " + line)
    assert (rec.kind, rec.requester_bdf, rec.address, rec.access, rec.detail["domain"]) == \
           ("amd-vi:io_page_fault", "07:00.1", 0xFDF9A000, "read", 0xE)


def test_amd_other_events_and_write_flag():
    recs = parse_log("AMD-Vi: Event logged [IO_PAGE_FAULT device=07:00.1 domain=0x000e address=0x1000 flags=0x0030]\n"
                     "AMD-Vi: Event logged [ILLEGAL_DEV_TABLE_ENTRY device=07:00.1 pasid=0x00000 address=0x0 flags=0x0000]\n"
                     "AMD-Vi: Event logged [IOTLB_INV_TIMEOUT device=07:00.1 address=0x000000041df1c200]\n")
    assert [r.kind for r in recs] == ["amd-vi:io_page_fault", "amd-vi:illegal_dev_table_entry",
                                      "amd-vi:iotlb_inv_timeout"]
    assert recs[0].access == "write"


def test_arm_smmu_v2_and_v3():
    recs = parse_log(
        "arm-smmu 2b500000.iommu: Unhandled context fault: fsr=0x402, iova=0x12345000, fsynr=0x11, "
        "cbfrsynra=0x1c00, cb=3\n"
        "arm-smmu 2b500000.iommu: Blocked unknown Stream ID 0x1c01; boot with \"arm-smmu.disable_bypass=0\" to allow\n"
        "arm-smmu 2b500000.iommu: Unexpected global fault, this could be serious\n"
        "arm-smmu-v3 9050000.smmuv3: event 0x10 received:\n"
        "arm-smmu-v3 9050000.smmuv3: \t0x0000010000000010\n"
        "arm-smmu-v3 9050000.smmuv3: \t0x0000000800000000\n"
        "arm-smmu-v3 9050000.smmuv3: \t0x00000000fffff000\n"
        "arm-smmu-v3 9050000.smmuv3: \t0x0000000000000000\n"
        "arm-smmu-v3 9050000.smmuv3: event: F_TRANSLATION client: 0000:01:00.0 sid: 0x100 ssid: 0x0 "
        "iova: 0xfffff000 ipa: 0x0\n")
    v2, blocked, glob, v3, v3new = recs
    assert (v2.address, v2.access, v2.detail["sid"], v2.unit) == (0x12345000, "write", 0x1C00, "2b500000.iommu")
    assert blocked.detail["sid"] == 0x1C01 and glob.kind == "arm-smmu:global-fault"
    assert (v3.reason, v3.detail["sid"], v3.address, v3.access) == ("F_TRANSLATION", 0x100, 0xFFFFF000, "read")
    assert (v3new.requester, v3new.address) == ("0000:01:00.0", 0xFFFFF000)


def test_serr_and_aer():
    recs = parse_log(
        "NMI: PCI system error (SERR) for reason a1 on CPU 0.\n"
        "pcieport 0000:00:1c.0: AER: Uncorrected (Non-Fatal) error received: 0000:01:00.0\n"
        "pcieport 0000:00:1c.0: AER: Multiple Corrected error received: id=0100\n"
        "e1000e 0000:01:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, "
        "(Requester ID)\n")
    serr, aer1, aer2, bus = recs
    assert (serr.kind, serr.reason_code, serr.detail["cpu"]) == ("serr-nmi", 0xA1, 0)
    assert (aer1.requester, aer1.reason) == ("0000:01:00.0", "Uncorrected (Non-Fatal)")
    assert aer2.requester == "01:00.0" and aer2.detail["multiple"]
    assert (bus.requester, bus.detail["type"]) == ("0000:01:00.0", "Transaction Layer")


@pytest.mark.parametrize("text,expected", [
    # 3.x: pr_fmt "dmar: " in front of the old two-line form
    ("dmar: DMAR:[DMA Read] Request device [00:02.0] fault addr 7f3df000 \n"
     "DMAR:[fault reason 06] PTE Read access is not set", ("00:02.0", 0x7F3DF000, "read", 6)),
    # a segment in the requester
    ("DMAR: [DMA Write NO_PASID] Request device [0000:3a:00.1] fault addr 0x1000 [fault reason 0x05] "
     "PTE Write access is not set", ("0000:3a:00.1", 0x1000, "write", 5)),
    # AMD-Vi behind an IOMMU device prefix
    ("iommu ivhd0: AMD-Vi: Event logged [IO_PAGE_FAULT device=0000:07:00.1 domain=0x000e "
     "address=0xfdf9a000 flags=0x0020]", ("0000:07:00.1", 0xFDF9A000, "write", None)),
])
def test_more_prefixes_and_requester_forms(text, expected):
    (rec,) = [r for r in parse_log(text) if r.address is not None]
    assert (rec.requester, rec.address, rec.access, rec.reason_code) == expected


# --- hostile input: time linear in the input ----------------------------------------------

FAULT_LINE = ("[    1.097283] DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0xffffc000 "
              "[fault reason 0x06] PTE Read access is not set")
FAULT_KEY = ("dma-remap", "02:00.0", None, 0xFFFFC000, "read", 6, "PTE Read access is not set")
MiB = 1 << 20


def timed_parse(text: str) -> tuple[list, float]:
    # CPU time of this process, not wall time: the other xdist worker, a QEMU guest or
    # a busy CI host delay a process without making its parse cost more (CI once saw a
    # hostile 16 MiB parse at 2.01x a baseline measured at a quieter instant).
    t = time.process_time()
    recs = parse_log(text)
    return recs, time.process_time() - t


@functools.cache
def ordinary_log_seconds(size: int) -> float:
    """What parsing a real capture log of ``size`` characters costs on this machine now:
    the baseline of the large hostile inputs, measured in the same run, so that a busy
    machine slows both alike (hostile lines cost 0.15-0.75 of it; a quadratic pattern
    costs thousands of times more, hence the margin ``SLACK``)."""
    log = (SAMPLES / "copied-traffic" / "capture-dmesg.txt").read_text(errors="replace")
    return timed_parse((log * (size // len(log) + 1))[:size])[1]


# A linear parse of hostile text costs 0.15-0.75 of the baseline; a quadratic one costs
# thousands of times more. The margin between them leaves room for cache and frequency
# effects that CPU time still sees on a shared machine.
SLACK = 5


def filler(kind: str, n: int) -> str:
    """n characters of one line (no line break) that once took the parser quadratic time."""
    if kind == "random":        # any byte but a line break, as latin-1 characters
        return os.urandom(n).translate(NO_BREAKS).decode("latin-1")
    unit = {"nul": "\0", "A": "A", "hex": "a", "digits": "1", "brackets": "[", "colons": "a:",
            "fragment": FAULT_LINE[15:] + " ", "fragment-no-spaces": FAULT_LINE.replace(" ", ""),
            "fragment-cut": FAULT_LINE[15:80],
            "amd": "AMD-Vi: Event logged [IO_PAGE_FAULT device=", "kv": "a=1", "suppressed": "x: 1 callbacks suppressed",
            "aer": "0000:00:1c.0: AER: Corrected error receive", "damaged": "Request device [02:0\ufffd.0] DMAR: "}[kind]
    return (unit * (n // len(unit) + 1))[:n]


NO_BREAKS = bytes.maketrans(b"\n\r\x0b\x0c\x1c\x1d\x1e\x85", b"xxxxxxxx")
KINDS = ["nul", "A", "hex", "digits", "brackets", "colons", "fragment", "fragment-no-spaces", "fragment-cut", "amd",
         "kv", "suppressed", "aer", "damaged", "random"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_1mib_line_of_anything_is_fast_and_a_record_at_its_start_is_kept(kind):
    recs, took = timed_parse(FAULT_LINE + filler(kind, MiB))
    assert took < 1.0, took     # the quadratic parser took 21-90 s for 64 KiB of NUL or "A"
    assert recs and key(recs[0])[:5] == FAULT_KEY[:5]
    recs, took = timed_parse(filler(kind, MiB) + "\n" + FAULT_LINE + "\n")
    assert took < 1.0 and [key(r) for r in recs if r.kind == "dma-remap"][-1] == FAULT_KEY


@pytest.mark.parametrize("kind", ["nul", "A", "random", "fragment"])
def test_a_64mib_line_costs_no_more_than_a_real_log_of_its_size(kind):
    text = filler(kind, 64 * MiB)
    recs, took = timed_parse(text)
    baseline = ordinary_log_seconds(len(text))
    assert took < SLACK * baseline, f"{kind}: {took:.1f} s, a real log of that size {baseline:.1f} s"
    if kind == "fragment":      # the record at the start of the line; the rest is past the cut
        assert [key(r) for r in recs] == [FAULT_KEY]


def test_a_nul_hole_ends_a_line():
    """A sparse-file hole (or a log truncated under its writer) between two records: the
    record after the hole is on the same line as the hole, and is found."""
    text = FAULT_LINE + "\n" + "\0" * (16 * MiB) + FAULT_LINE + "\n"
    recs, took = timed_parse(text)
    assert took < SLACK * ordinary_log_seconds(len(text)) and [key(r) for r in recs] == [FAULT_KEY, FAULT_KEY]


def test_many_long_lines_cost_linear_time():
    """Lines at the length cut, each full of near-matches: 16 MiB of them."""
    line = filler("fragment", LINE_MAX - 1) + "\n"
    text = line * (16 * MiB // LINE_MAX)
    recs, took = timed_parse(text)
    assert took < SLACK * ordinary_log_seconds(len(text)), took


HOSTILE_UNITS = [FAULT_LINE[:k] for k in (5, 16, 30, 45, 60, 75, 90, 110)] + [
    "\0", "A", "a", "1", "[", "a:", " ", "\ufffd", "DMAR: ", "Request device [[", "AMD-Vi: Event logged [",
    "device=07:00.1 ", "=", "x: 1 callbacks suppressed", "pcieport 0000:00:1c.0: AER: ", "PCIe Bus Error: severity=",
    "event 0x10 received:", "\t0x0000010000000010", "DMAR: Dump dmar0 table entries for IOVA 0xffffc000",
    "DMAR: pte level: 4", "Command line: ", "DMAR:[fault reason 06] "]


@given(unit=st.sampled_from(HOSTILE_UNITS), extra=st.text(max_size=8), sep=st.sampled_from(["", "", "\n", "\r", "\0"]),
       size=st.integers(1, 256 * 1024))
@settings(max_examples=60, deadline=None)
def test_hostile_text_has_a_time_bound_and_keeps_the_record_before_it(unit, extra, sep, size):
    block = unit + extra + sep
    text = FAULT_LINE + "\n" + (block * (size // len(block) + 1))[:size]
    recs, took = timed_parse(text)
    assert took < 1.0, f"{len(text)} characters took {took:.2f} s"
    assert recs and key(recs[0])[:2] == FAULT_KEY[:2] and recs[0].address == 0xFFFFC000


# --- undecodable bytes -----------------------------------------------------------------------

@pytest.mark.parametrize("line,requester,detail", [
    # a bad byte elsewhere on the line costs nothing
    (FAULT_LINE.replace("PTE Read", "PTE \ufffdRead"), "02:00.0", {}),
    (FAULT_LINE.replace("1.097283", "1.09\ufffd283"), "02:00.0", {}),
    # inserted into the requester: the fixed-width id is still there
    (FAULT_LINE.replace("[02:00.0]", "[02:00\ufffd.0]"), "02:00.0", {"requester_recovered_from": "02:00\ufffd.0"}),
    # in place of a digit: the id is unknown, the fault is kept with the damaged text
    (FAULT_LINE.replace("[02:00.0]", "[02:0\ufffd.0]"), None, {"requester_unparsed": "02:0\ufffd.0"}),
    (FAULT_LINE.replace("[02:00.0]", "[\ufffd2:00.0]"), None, {"requester_unparsed": "\ufffd2:00.0"}),
])
def test_a_damaged_fault_line_keeps_its_fault(line, requester, detail):
    (rec,) = parse_log(line)
    assert (rec.kind, rec.requester, rec.address, rec.access, rec.reason_code) == \
           ("dma-remap", requester, 0xFFFFC000, "read", 6)
    assert detail.items() <= rec.detail.items()
    assert rec.detail.get("damaged") is (True if detail else None)


def test_damage_in_the_address_or_type_keeps_the_fault_and_says_what_is_unknown():
    (rec,) = parse_log(FAULT_LINE.replace("0xffffc000", "0xfff\ufffdc000"))
    assert (rec.requester, rec.address, rec.detail["address_unparsed"]) == ("02:00.0", None, "0xfff\ufffdc000")
    (rec,) = parse_log(FAULT_LINE.replace("DMA Read", "DMA R\ufffdad"))
    assert (rec.kind, rec.requester, rec.address, rec.access) == ("dma-remap", "02:00.0", 0xFFFFC000, None)
    (rec,) = parse_log("AMD-Vi: Event logged [IO_PAGE_FAULT device=07:\ufffd0.1 domain=0x000e address=0x1000 "
                       "flags=0x0010]")
    assert (rec.requester, rec.address, rec.detail["requester_unparsed"]) == (None, 0x1000, "07:\ufffd0.1")


@pytest.mark.parametrize("bad", [b"\xff", b"Z", b"\x00", b"\x1b"])
def test_one_bad_byte_anywhere_in_a_fault_line_keeps_the_record(bad):
    """A fault line of the sample's capture log with one byte replaced or inserted, at
    every position: the fault is never lost, and its requester is the real one or None
    (unknown), never another device: a byte that is no hex digit cannot pass for one."""
    text = (SAMPLES / "nocopy-fault" / "capture-dmesg.txt").read_bytes()
    start = text.rfind(b"\n", 0, text.find(b"Request device [02:00.0]")) + 1
    end = text.find(b"\n", start)
    assert [r.requester for r in parse_log(text.decode(), "x") if r.kind == "dma-remap"] == ["02:00.0"]
    for pos in range(start + 16, end):          # from the "DMAR:" tag to the line's end
        for damaged in (text[:pos] + bad + text[pos + 1:], text[:pos] + bad + text[pos:]):
            recs = [r for r in parse_log(damaged.decode(errors="replace"), "x") if r.kind == "dma-remap"]
            assert len(recs) == 1, (pos, damaged[start:end + 1])
            assert recs[0].requester in ("02:00.0", None), (pos, recs[0].requester)


@pytest.mark.parametrize("bad", [b"\xff", b"Z", b"\x1b"])
def test_one_bad_byte_in_an_amd_vi_event_keeps_it(bad):
    """An AMD-Vi event line (the kernel's own format) with one byte replaced or inserted in
    its device id: the event is kept, its device the real one or unknown, never another."""
    line = (b"[   12.345678] AMD-Vi: Event logged [IO_PAGE_FAULT device=0000:02:00.0 domain=0x0001 "
            b"address=0xfffc0000 flags=0x0020]\n")
    start = line.find(b"device=") + 7
    for pos in range(start, start + 12):
        for damaged in (line[:pos] + bad + line[pos + 1:], line[:pos] + bad + line[pos:]):
            recs = [r for r in parse_log(damaged.decode(errors="replace"), "x") if r.kind.startswith("amd-vi:")]
            assert len(recs) == 1 and recs[0].requester in ("0000:02:00.0", None), (pos, damaged)
