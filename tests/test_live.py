"""Live targets: a QEMU guest over QMP (drgn's QMP mode) against its own sysfs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import dumpkit
from conftest import REPO


@pytest.fixture(scope="module")
def live_guest(tmp_path_factory):
    out = tmp_path_factory.mktemp("live")
    proc = subprocess.Popen([sys.executable, str(REPO / "sample-dumps" / "generate"), "--live",
                             "--out", str(out), "--timeout", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        line = ""
        while time.monotonic() < deadline and "ready" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"live guest exited: {proc.stderr.read()[-2000:]}")
        assert "qmp:" in line, line
        yield line.split("ready: ", 1)[1].strip(), out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_qmp_target_reads_the_running_guest(live_guest):
    source, out = live_guest
    dump = dumpkit.open(source)
    assert dump.live and dump.info.kernel_release == "6.1.192"
    assert "live target" in dump.info.unknown["crash_time"]
    truth = json.loads((out / "live-ground-truth" / "pci.json").read_text())["devices"]
    tree = dump.pci()
    assert [d.bdf for d in tree] == sorted(truth)
    for dev in tree:
        gt = truth[dev.bdf]
        assert (dev.driver, dev.enable_count, dev.power_state) == (gt["driver"], gt["enable"], gt["power_state"])
        if dev.driver:
            assert dev.is_busmaster == gt["bus_master"]
    assert dump.kdump().capture_kernel is False and dump.kdump().crash_kernel_loaded is False
