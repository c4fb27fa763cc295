"""Live targets: a QEMU guest over QMP (drgn's QMP mode) against its own sysfs."""

from __future__ import annotations

import json

import pytest

import dumpkit


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
