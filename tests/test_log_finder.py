"""Logs are found where the capture tools put them, and each is checked against the
crash. The layouts are built in a temporary directory around a committed sample (a link
to its vmcore) by the commands the tools run: ``makedumpfile --dump-dmesg`` for the
crashed kernel's own log (kdump-tools' dmesg.STAMP, RHEL's vmcore-dmesg.txt, SUSE's
dmesg.txt), and the capture kernel's log saved under those names."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli

from dumpkit.kdump.capture import find_capture_logs

NOCOPY = SAMPLES / "nocopy-fault"
OTHER = SAMPLES / "copied-traffic"
NIC = "0000:02:00.0"
STAMP = "202611232353"
# (dump name, log name) as each tool saves them
LAYOUTS = {
    "kdump-tools": (f"dump.{STAMP}", f"dmesg.{STAMP}"),
    "rhel": ("vmcore", "vmcore-dmesg.txt"),
    "suse": ("vmcore", "dmesg.txt"),
    "makedumpfile": ("crash.kdump", "crash.kdump.dmesg"),
    "dumpkit": ("vmcore.kdump", "capture-dmesg.txt"),
}


def _dump_dmesg(vmcore: Path, out: Path) -> Path:
    r = subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="module")
def own_logs(tmp_path_factory) -> dict[str, Path]:
    """The crashed kernels' own logs, as makedumpfile --dump-dmesg extracts them."""
    d = tmp_path_factory.mktemp("dmesg")
    return {s.name: _dump_dmesg(s / "vmcore.kdump", d / s.name) for s in (NOCOPY, OTHER)}


def _layout(tmp: Path, layout: str, log: Path) -> Path:
    dump_name, log_name = LAYOUTS[layout]
    stamp = tmp / STAMP
    stamp.mkdir()
    (stamp / dump_name).symlink_to(NOCOPY / "vmcore.kdump")
    (stamp / log_name).write_bytes(log.read_bytes())
    return stamp / dump_name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layouts_log_is_found(tmp_path, layout):
    dump = _layout(tmp_path, layout, NOCOPY / "capture-dmesg.txt")
    assert [p.name for p in find_capture_logs(dump)] == [LAYOUTS[layout][1]]


@pytest.mark.parametrize("layout", ["kdump-tools", "rhel", "suse"])
def test_crashed_kernels_own_log_is_used(tmp_path, layout, own_logs):
    dump = _layout(tmp_path, layout, own_logs[NOCOPY.name])
    r = run_cli("verdict", str(dump), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    log = str(dump.parent / LAYOUTS[layout][1])
    assert v["capture_logs"] == [log]
    assert v["capture_matches"][log]["status"] == "consistent"
    assert v["capture_matches"][log]["facts"]["printk_tail"] == "agree"


@pytest.mark.parametrize("layout", ["kdump-tools", "rhel", "makedumpfile"])
def test_capture_kernels_log_under_a_tools_name_attributes_faults(tmp_path, layout):
    dump = _layout(tmp_path, layout, NOCOPY / "capture-dmesg.txt")
    r = run_cli("verdict", str(dump), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    nic = next(e for e in v["endpoints"] if e["bdf"] == NIC)
    assert nic["faults"] >= 1 and nic["hit_capture_kernel"] is True, nic
    facts = v["capture_matches"][str(dump.parent / LAYOUTS[layout][1])]["facts"]
    assert facts["elfcorehdr"] == "agree" and facts["memory_map"] == "agree"


@pytest.mark.parametrize("which", ["own log", "capture log"])
def test_another_crashs_log_under_kdump_tools_name_is_refused(tmp_path, which, own_logs):
    log = own_logs[OTHER.name] if which == "own log" else OTHER / "capture-dmesg.txt"
    dump = _layout(tmp_path, "kdump-tools", log)
    r = run_cli("verdict", str(dump))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "from another crash" in r.stderr and f"dmesg.{STAMP}" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["triage", "report"])
@pytest.mark.parametrize("layout", ["kdump-tools", "suse"])
def test_output_onto_a_log_found_beside_the_dump_is_refused(tmp_path, command, layout):
    """The log beside a dump is evidence: writing the output over it is refused (exit 8)
    before any work, and the log is left as it was."""
    dump = _layout(tmp_path, layout, NOCOPY / "capture-dmesg.txt")
    log = dump.parent / LAYOUTS[layout][1]
    before = log.read_bytes()
    target = str(dump.parent) if command == "triage" else str(dump)
    r = run_cli(command, target, "-o", str(log))
    assert r.returncode == 8, (r.returncode, r.stderr)
    assert "one of the inputs" in r.stderr and log.read_bytes() == before
