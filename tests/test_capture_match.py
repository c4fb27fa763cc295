"""Capture logs are checked against the crash they claim to describe: the samples' own
logs are consistent, another crash's is a mismatch, a log without capture facts is
undecidable, and a vmcore-dmesg (the crashed kernel's own log) is recognised."""

from __future__ import annotations

import pytest
from conftest import FIRST_KERNEL_DUMPS, SAMPLES

import dumpkit
from dumpkit.kdump.match import match_capture_log

SCENARIOS = sorted({d["scenario"] for d in FIRST_KERNEL_DUMPS})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_own_capture_log_and_console_are_consistent(scenario):
    prog = dumpkit.open(SAMPLES / scenario / "vmcore.kdump").prog
    for name in ("capture-dmesg.txt", "console.log"):
        m = match_capture_log(prog, (SAMPLES / scenario / name).read_text(errors="replace"))
        assert m.status == "consistent", (name, m.reasons)
        assert any("elfcorehdr" in r for r in m.reasons)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_other_crashs_log_is_a_mismatch(scenario):
    prog = dumpkit.open(SAMPLES / scenario / "vmcore.kdump").prog
    own = match_capture_log(prog, (SAMPLES / scenario / "capture-dmesg.txt").read_text())
    for other in SCENARIOS:
        if other == scenario:
            continue
        m = match_capture_log(prog, (SAMPLES / other / "capture-dmesg.txt").read_text())
        # two boots may reserve the same crashkernel range; then the log cannot be told apart
        if m.reasons == own.reasons:
            assert m.status == "consistent"
        else:
            assert m.status == "mismatch", (other, m.reasons)


def test_first_kernel_boot_log_is_undecidable_and_vmcore_dmesg_is_recognised():
    from drgn.helpers.linux.printk import get_printk_records

    prog = dumpkit.open(SAMPLES / "nocopy-fault" / "vmcore.kdump").prog
    assert match_capture_log(prog, (SAMPLES / "nocopy-fault" / "ground-truth" / "dmesg.txt").read_text()).status \
        == "undecidable"
    text = "\n".join(f"[{r.timestamp / 1e9:12.6f}] {r.text.decode(errors='replace')}"
                     for r in get_printk_records(prog))
    assert match_capture_log(prog, text).status == "consistent"


def test_hostile_capture_log_is_checked_in_linear_time():
    import time

    prog = dumpkit.open(SAMPLES / "idle" / "vmcore.kdump").prog
    for text in ("Command line: " * (4 << 20), "\0" * (64 << 20), "elfcorehdr=" * (4 << 20),
                 "\n[    0.000000] Linux version " * (2 << 20),            # two million boots
                 "[    0.000000] Command line: elfcorehdr=0x1000\n" * (1 << 20)):
        t = time.monotonic()
        assert match_capture_log(prog, text).status in ("undecidable", "mismatch")
        assert time.monotonic() - t < 5


@pytest.mark.parametrize("spelling", ["usable", "System RAM", "  1.2 GB System RAM"])
def test_memory_map_in_each_kernels_spelling(spelling):
    """6.x prints the e820 map's RAM as "usable", 7.x as "System RAM" (lab notes); the
    capture log's map is judged the same either way, and a map outside the reservation is
    a mismatch in either spelling."""
    prog = dumpkit.open(SAMPLES / "nocopy-fault" / "vmcore.kdump").prog
    text = (SAMPLES / "nocopy-fault" / "capture-dmesg.txt").read_text()
    respelled = text.replace("] usable", f"] {spelling.strip()}" if spelling.strip() == spelling
                             else f"]{spelling}")
    m = match_capture_log(prog, respelled)
    assert m.facts["memory_map"] == "agree", m
    moved = respelled.replace("0x000000000d001000-0x0000000016ffffff", "0x000000001d001000-0x0000000026ffffff")
    assert moved != respelled
    m = match_capture_log(prog, moved)
    assert m.status == "mismatch" and m.facts["memory_map"] == "disagree", m


def test_elfcorehdr_kexec_load_form_is_read_in_kib():
    """kexec-tools' kexec_load writes elfcorehdr=NNNK: the same address as 0x… form."""
    prog = dumpkit.open(SAMPLES / "nocopy-fault" / "vmcore.kdump").prog
    text = (SAMPLES / "nocopy-fault" / "capture-dmesg.txt").read_text()
    kib = text.replace("elfcorehdr=0xd000000", f"elfcorehdr={0xd000000 >> 10}K")
    assert kib != text
    assert match_capture_log(prog, kib).facts["elfcorehdr"] == "agree"
    off = text.replace("elfcorehdr=0xd000000", f"elfcorehdr={(0xd000000 >> 10) + 4}K")
    assert match_capture_log(prog, off).facts["elfcorehdr"] == "disagree"


def _cached_capture_paths() -> list[tuple[str, object]]:
    """(scenario, root) of every cached scenario whose run.json states its capture path."""
    import json

    from conftest import CACHE

    found = {}
    for m in sorted((CACHE / "samples").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        manifest = json.loads(m.read_text())
        if not manifest["kernel"].get("debug_package"):
            continue        # our own kernels (the iommufd scenario's 6.12 has no RTC driver)
        for d in manifest["dumps"]:
            run = m.parent / d["scenario"] / "run.json"
            if d["kind"] == "first-kernel vmcore" and run.is_file() and "capture_path" in json.loads(run.read_text()):
                found[d["scenario"]] = (m.parent, d["file"])
    return sorted(found.items())


CACHED_PATHS = _cached_capture_paths()


@pytest.mark.skipif(not CACHED_PATHS, reason="no cached scenarios: run scripts/setup")
@pytest.mark.parametrize(("scenario", "where"), CACHED_PATHS, ids=[s for s, _ in CACHED_PATHS])
def test_capture_log_matches_by_the_facts_of_its_capture_path(scenario, where):
    """kexec_file_load: elf_load_addr names the header; kexec_load leaves it 0 and the header
    is one of the crash image's segments. Either way the capture kernel's own log is
    consistent with its crash, and the dump says which call loaded the capture kernel."""
    import json

    root, file = where
    run = json.loads((root / scenario / "run.json").read_text())
    call = run["capture_path"]["kexec"]
    dump = dumpkit.open(root / file)
    kd = dump.kdump()
    assert kd.crash_kernel_call == call
    assert (kd.crash_kernel_elf_load_addr is None) == (call == "kexec_load")
    log = root / scenario / run["capture_path"]["files"]["capture_log"]
    m = match_capture_log(dump.prog, log.read_text(errors="replace"))
    assert m.status == "consistent", m
    assert m.facts["elfcorehdr"] == "agree" and m.facts["memory_map"] == "agree", m
    if call == "kexec_load":
        assert any("crash image segment" in r for r in m.reasons), m.reasons


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_serial_console_is_judged_by_the_crashed_kernels_last_records(scenario):
    """A serial console holds the crashed kernel's last records before the capture
    kernel's boot: they are this dump's at their times, and no other crash's, even where
    the two crashes share a reservation (the same machine crashing twice)."""
    prog = dumpkit.open(SAMPLES / scenario / "vmcore.kdump").prog
    for other in SCENARIOS:
        m = match_capture_log(prog, (SAMPLES / other / "console.log").read_text(errors="replace"))
        assert m.facts["console_tail"] == ("agree" if other == scenario else "disagree"), (other, m)
        assert m.status == ("consistent" if other == scenario else "mismatch")


def _cached_first_kernel_dumps() -> dict:
    """scenario -> (root, dump) of the newest cached stock-kernel manifest's scenarios."""
    import json

    from conftest import CACHE

    out = {}
    for m in sorted((CACHE / "samples").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        manifest = json.loads(m.read_text())
        if not manifest["kernel"].get("debug_package"):
            continue        # our own kernels (the iommufd scenario's 6.12 has no RTC driver)
        for d in manifest["dumps"]:
            if d["kind"] == "first-kernel vmcore" and (m.parent / d["scenario"] / "capture-dmesg.txt").is_file():
                out[d["scenario"]] = (m.parent, m.parent / d["file"])
    return out


CACHED_DUMPS = _cached_first_kernel_dumps()


@pytest.mark.skipif(len(CACHED_DUMPS) < 2, reason="fewer than two cached stock-kernel scenarios: run scripts/setup")
@pytest.mark.parametrize("scenario", sorted(CACHED_DUMPS))
def test_a_machines_other_crashes_are_told_apart(scenario):
    """The stock-kernel scenarios are one machine crashing again and again, minutes apart,
    often with the same reservation and the same crash image layout: the capture kernel's
    clock reading (against CRASHTIME, corrected by the crashed kernel's own RTC reading),
    its initrd and its PCI functions tell each crash's capture log from the others'."""
    prog = dumpkit.open(CACHED_DUMPS[scenario][1]).prog
    for other, (root, _dump) in CACHED_DUMPS.items():
        m = match_capture_log(prog, (root / other / "capture-dmesg.txt").read_text(errors="replace"))
        if other == scenario:
            assert m.status == "consistent" and m.facts["clock"] == "agree", m
        else:
            # a capture kernel that started within minutes after this crash, on the same
            # layout, cannot be told from this crash's own: the one case accepted
            assert m.status == "mismatch" or m.facts["clock"] == "agree", (other, m)
