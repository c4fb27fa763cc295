"""The verdict as a reader gets it: table order, width, colour, bottom line, legend, ring
states, JSON fields, and the ring comparison behind "kept writing while the capture kernel
ran" — on the committed sample dumps, against QEMU's trace of each run."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys

import pytest
from conftest import SAMPLES, ground_truth_pci

import dumpkit
from dumpkit.verdict import judge
from dumpkit.verdict.claims import HEADERS, LEGEND
from dumpkit.verdict.claims import NAMES as CLAIMS
from dumpkit.verdict.render import bottom_line, endpoint_rank, verdict_text
from dumpkit.verdict.words import WORDS

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BDF = re.compile(r"^([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ")


def run_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def dump(scenario: str) -> str:
    return str(SAMPLES / scenario / "vmcore.kdump")


def nic(scenario: str) -> str:
    return next(b for b, d in ground_truth_pci(scenario).items() if d["driver"] == "e1000e")


def events(scenario: str) -> dict:
    return json.loads((SAMPLES / scenario / "run.json").read_text())["qemu_events"]["counts"]


def table(text: str) -> list[str]:
    """The table's endpoint lines, in order (the first lines starting with a BDF)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("device "))
    out = []
    for line in lines[start + 1:]:
        if not BDF.match(line):
            break
        out.append(line)
    return out


@pytest.fixture(scope="module")
def fault_text() -> str:
    r = run_cli("verdict", dump("nocopy-fault"), env={"COLUMNS": "80", "NO_COLOR": ""})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def fault_verdicts():
    return judge(dumpkit.open(dump("nocopy-fault")), [SAMPLES / "nocopy-fault" / "capture-dmesg.txt"])


def test_the_endpoint_that_matters_comes_first(fault_text, fault_verdicts):
    """QEMU traced the NIC's receive writes and VT-d faults after the crash: its row is the
    first, and the rows go faults/DMA, unknown, quiet."""
    assert events("nocopy-fault")["crash_to_capture_init"]["vtd_dmar_fault"] > 0
    rows = table(fault_text)
    assert BDF.match(rows[0]).group(1) == nic("nocopy-fault")
    ranks = [endpoint_rank(fault_verdicts.get(BDF.match(r).group(1))) for r in rows]
    assert ranks == sorted(ranks) and len(rows) == len(fault_verdicts.endpoints)
    assert ranks[0] == 0 and ranks[-1] == 3


def test_width_is_respected_and_names_cut_with_an_ellipsis(fault_text):
    assert max(len(line) for line in fault_text.splitlines()) <= 80
    row = next(r for r in table(fault_text) if r.startswith(nic("nocopy-fault")))
    full = ground_truth_pci("nocopy-fault")[nic("nocopy-fault")]
    assert "…" in row and "82574L" in row, row
    assert "faulted" in row.split("…", 1)[1], row
    wide = run_cli("verdict", dump("nocopy-fault"), env={"COLUMNS": "200"}).stdout
    assert "82574L Gigabit Network Connection" in next(r for r in table(wide) if r.startswith(nic("nocopy-fault")))
    assert full["driver"] == "e1000e"


def test_no_colour_on_a_pipe_colour_on_a_terminal_unless_no_color():
    piped = run_cli("verdict", dump("nocopy-fault"), env={"NO_COLOR": ""})
    assert piped.returncode == 0 and not ANSI.search(piped.stdout)
    assert ANSI.search(_on_a_terminal({"NO_COLOR": ""}))
    assert not ANSI.search(_on_a_terminal({"NO_COLOR": "1"}))


def _on_a_terminal(env: dict) -> str:
    """dumpkit verdict's stdout when stdout is a terminal (a pty)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dumpkit.cli", "verdict", dump("nocopy-fault")], stdout=slave,
                            stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "100", **env})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:          # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    return out.decode()


def test_bottom_line_counts_as_qemu_saw_it(fault_text, fault_verdicts):
    """One NIC wrote after the crash and faulted (QEMU: receive writes and VT-d faults after
    the crash); the three driverless ICH9 functions are unknown, and the line says why."""
    counts = events("nocopy-fault")["crash_to_capture_init"]
    assert counts["e1000e_rx_written_to_guest"] > 5 and counts["vtd_dmar_fault"] > 0
    line = bottom_line(fault_verdicts)
    assert line.startswith(f"1 endpoint kept doing DMA after the crash ({nic('nocopy-fault')} e1000e)")
    assert f"1 faulted in the capture kernel ({nic('nocopy-fault')} e1000e)" in line
    driverless = [b for b, d in ground_truth_pci("nocopy-fault").items()
                  if d["driver"] is None and d["header_type"] == 0 and b.startswith("0000:00:1f")]
    assert f"{len(driverless)} unknown, because no driver is bound" in line
    assert "Bottom line: 1 endpoint kept doing DMA" in " ".join(fault_text.split())


def test_copied_tables_bottom_line_says_overlap_is_unknown():
    v = judge(dumpkit.open(dump("copied-traffic")), [SAMPLES / "copied-traffic" / "capture-dmesg.txt"])
    line = bottom_line(v)
    assert "0 faulted in the capture kernel" in line and "nothing shows whether their DMA overlapped" in line
    assert nic("copied-traffic") in line.split("overlapped", 1)[1]


def test_the_legend_explains_every_word_of_the_table(fault_text):
    legend = " ".join(fault_text.split("Legend:", 1)[1].split("\n\n", 1)[0].split())
    header = next(line for line in fault_text.splitlines() if line.startswith("device "))
    for claim in CLAIMS:
        assert HEADERS[claim] in header and f"{HEADERS[claim]}: {LEGEND[claim][0]}" in legend
    for row in table(fault_text):
        cells = row[-40:]
        for word in sorted(WORDS, key=len, reverse=True):
            if re.search(rf"(^|\s){re.escape(word)}(\s|$)", cells):
                assert f"{word} = " in legend, (word, row)
                cells = cells.replace(word, "")


def test_a_capture_kernels_dump_is_said_and_points_to_capture_dump():
    r = run_cli("verdict", SAMPLES / "copied-traffic" / "capture-state.kdump", "--capture-log", "/dev/null")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stderr
    assert "warning: this dump is of a capture (kdump) kernel" in text and "--capture-dump" in text


def test_json_keeps_its_keys_and_adds_words_bases_hex_and_rings():
    r = run_cli("verdict", "--json", dump("nocopy-fault"))
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    e = next(x for x in js["endpoints"] if x["bdf"] == nic("nocopy-fault"))
    for claim in CLAIMS:
        for key in (claim, f"{claim}_applicable", f"{claim}_evidence", f"{claim}_sources"):
            assert key in e
        assert e[f"{claim}_word"] in WORDS and e[f"{claim}_basis"] in ("observed", "inferred", None)
    assert (e["hit_capture_kernel"], e["hit_capture_kernel_word"]) == (True, "faulted")
    assert e["did_dma_after_crash_basis"] == "observed"           # its faults are observed DMA
    assert e["landed_pages_hex"] == [f"{p:#x}" for p in e["landed_pages"]] and e["landed_pages"]
    assert (e["vendor_hex"], e["device_hex"]) == ("0x8086", "0x10d3") and e["vendor"] == 0x8086
    assert js["bottom_line"] == bottom_line(judge(dumpkit.open(dump("nocopy-fault")),
                                                  [SAMPLES / "nocopy-fault" / "capture-dmesg.txt"]))
    assert set(js["legend"]) == set(CLAIMS)


@pytest.mark.parametrize("scenario", ["copied-traffic", "nocopy-fault"])
def test_each_ring_has_its_state(scenario):
    """The NIC's receive ring: completions never processed as QEMU counted its receive
    writes (±5, the crash marker is polled), and a state that agrees with its counts."""
    v = judge(dumpkit.open(dump(scenario)), [SAMPLES / scenario / "capture-dmesg.txt"]).get(nic(scenario))
    assert v.rings and sum(r["completed"] for r in v.rings) == v.post_crash_completions
    assert abs(v.post_crash_completions - events(scenario)["crash_to_capture_init"]["e1000e_rx_written_to_guest"]) <= 5
    for r in v.rings:
        want = ("empty" if r["completed"] == 0 else None if r["device_free"] is None
                else "full" if r["device_free"] == 0 else "partly processed")
        assert r["state"] == want, r
        assert r["completed"] + (r["device_free"] or 0) <= r["size"]
        if r["state"] != "empty":
            assert f"{r['name']} is {r['state']}" in str(v.did_dma_after_crash)
    # a ring with entries still handed to the device does not say it stopped by itself
    assert not v.rings_full and "stopped by itself" not in str(v.stopped_by_reset)


def test_ring_comparison_sees_a_change_and_sees_none_where_qemu_traced_none():
    """The NIC's rings in the vmcore against the same physical memory in a dump taken
    after it: its own run's capture dump (QEMU: no receive write after the capture kernel's
    /init) shows no change; another run's memory at those addresses does."""
    from dumpkit.iommu.collect import collect_iommu
    from dumpkit.overlap import compare_buffers
    from dumpkit.rings import dma_buffers
    from dumpkit.target.walk import pci_devices
    from dumpkit.verdict import state_lookup

    assert not events("copied-traffic")["after_capture_init"].get("e1000e_rx_written_to_guest")
    first = dumpkit.open(dump("copied-traffic"))
    pdev = dict(pci_devices(first.prog)[0])[nic("copied-traffic")]
    m = collect_iommu(first).mapping(nic("copied-traffic"))

    def translate(iova):
        hit = state_lookup(m, iova)
        return hit[0] if hit else None

    buffers = dma_buffers(first.prog, pdev)
    assert buffers
    same = compare_buffers(first.prog, dumpkit.open(SAMPLES / "copied-traffic" / "capture-state.kdump").prog,
                           buffers, translate)
    assert same.compared >= sum(b.size for b in buffers) and same.changed == 0 and not same.skipped
    other = compare_buffers(first.prog, dumpkit.open(SAMPLES / "nocopy-fault" / "capture-state.kdump").prog,
                            buffers, translate)
    assert other.compared and other.changed > 0 and other.where


def test_verdict_text_renders_with_an_explicit_width_and_colour(fault_verdicts):
    coloured = verdict_text(fault_verdicts, width=90, colour=True)
    plain = verdict_text(fault_verdicts, width=90, colour=False)
    assert ANSI.search(coloured) and not ANSI.search(plain)
    assert ANSI.sub("", coloured) == plain
    assert max(len(line) for line in plain.splitlines()) <= 90
