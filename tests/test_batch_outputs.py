"""Batch outputs that a signal, a second run or a full disk cannot corrupt: a triage
output is written beside its name and renamed over it at the end, under a lock. Real runs
of ``dumpkit triage`` on the committed samples."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import FIRST_KERNEL_DUMPS, SAMPLES

DUMPKIT = [sys.executable, "-m", "dumpkit.cli"]
DUMPS = [str(SAMPLES / d["file"]) for d in FIRST_KERNEL_DUMPS]


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_sigterm_leaves_a_complete_json_array_of_the_finished_rows(tmp_path):
    out = tmp_path / "triage.json"
    proc = subprocess.Popen([*DUMPKIT, "triage", *DUMPS, "--jobs", "1", "--format", "json", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    tmp = None
    while time.monotonic() < deadline and proc.poll() is None:     # until the first row is written
        tmp = next((p for p in tmp_path.iterdir() if p.name.endswith(".tmp")), None)
        if tmp is not None and tmp.stat().st_size > 100:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "triage finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    rows = json.loads(out.read_text())              # well-formed: the array is closed
    assert 1 <= len(rows) < len(DUMPS) and all(r["status"] == "ok" for r in rows)
    assert _leftovers(tmp_path) == []


def test_two_runs_on_one_output_never_mix_rows(tmp_path):
    out = tmp_path / "triage.csv"
    cmd = [*DUMPKIT, "triage", *DUMPS[:2], "--jobs", "1", "-o", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / ".triage.csv.lock").exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 8 and "another dumpkit run is writing it" in second.stderr, second.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == DUMPS[:2]
    assert _leftovers(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root, as CI runs), nearly full."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_leaves_the_previous_output(small_disk):
    out = small_disk / "triage.json"
    out.write_text("[]\n")
    try:
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * (64 << 10))
    except OSError:
        pass                                    # full: as meant
    r = subprocess.run([*DUMPKIT, "triage", *DUMPS[:2], "--jobs", "1", "--format", "json", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 8 and "No space left on device" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert out.read_text() == "[]\n"
    assert _leftovers(small_disk) == []
