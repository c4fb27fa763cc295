"""Claims never contradict each other, on every sample dump (committed, and cached when
generated) with the capture log found beside it: a fault the capture kernel logged from a
device is DMA after the crash; a device that did DMA after the crash could DMA; "stopped:
no" only for DMA known to have happened; no DMA, no reset to judge."""

from __future__ import annotations

import json

import pytest
from conftest import CACHE, FIRST_KERNEL_DUMPS, SAMPLES

import dumpkit
from dumpkit.kdump.capture import find_capture_logs
from dumpkit.verdict import judge


def _dumps() -> list:
    out = [SAMPLES / d["file"] for d in FIRST_KERNEL_DUMPS]
    for m in sorted((CACHE / "samples").glob("*/manifest.json")):
        out += [m.parent / d["file"] for d in json.loads(m.read_text())["dumps"] if d["kind"] == "first-kernel vmcore"]
    return out


DUMPS = _dumps()


def broken_rules(v) -> list[str]:
    """Every pair of claims of one endpoint that cannot both be true."""
    out = []
    for e in v.endpoints:
        could, did, hit, stopped = e.could_dma, e.did_dma_after_crash, e.hit_capture_kernel, e.stopped_by_reset
        if e.faults and did.value is not True:
            out.append(f"{e.bdf}: {e.faults} faults in the capture kernel, but did DMA after crash {did}")
        if did.value is True and could.value is False:
            out.append(f"{e.bdf}: did DMA after the crash, but could DMA {could}")
        if did.value is False and stopped.applicable:
            out.append(f"{e.bdf}: no DMA after the crash, but stopped by reset {stopped}")
        if stopped.value is False and did.value is not True:
            out.append(f"{e.bdf}: stopped by reset 'no' while DMA after the crash is {did}")
        if hit.value is True and could.value is False:
            out.append(f"{e.bdf}: hit the capture kernel, but could DMA {could}")
    return out


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_no_endpoint_carries_contradicting_claims(path):
    dump = dumpkit.open(path)
    if dump.kdump().capture_kernel:
        pytest.skip("a capture kernel's dump")
    v = judge(dump, find_capture_logs(path))
    assert broken_rules(v) == []


def test_the_rules_can_fail():
    """The checker itself, on verdicts with the contradictions it looks for."""
    from dumpkit.verdict import Claim, EndpointVerdict, Verdicts

    bad = EndpointVerdict("0000:02:00.0", "nic", "e1000e", Claim(False), Claim(None), Claim(True), Claim(False),
                          faults=1)
    assert len(broken_rules(Verdicts([bad], [], None, [], {}))) == 3
