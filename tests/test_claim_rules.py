"""Claims never contradict each other, on every sample dump (committed, and cached when
generated) with the capture log found beside it: a fault the capture kernel logged from a
device is DMA after the crash; a device that did DMA after the crash could DMA; "stopped:
no" only for DMA known to have happened; no DMA, no reset to judge."""

from __future__ import annotations

import json

import pytest
from conftest import CACHE, FIRST_KERNEL_DUMPS, SAMPLES

import dumpkit
from dumpkit.verdict.words import WORDS
from dumpkit.kdump.capture import find_capture_logs
from dumpkit.verdict import judge


def _dumps() -> list:
    out = [SAMPLES / d["file"] for d in FIRST_KERNEL_DUMPS]
    for m in sorted((CACHE / "samples").glob("*/manifest.json")):
        out += [m.parent / d["file"] for d in json.loads(m.read_text())["dumps"] if d["kind"] == "first-kernel vmcore"]
    return out


DUMPS = _dumps()


BASES = {"observed", "inferred"}


def broken_rules(v) -> list[str]:
    """Every pair of claims of one endpoint that cannot both be true, and every top-line
    word that says more than its evidence."""
    out = []
    for e in v.endpoints:
        could, did, hit, stopped = e.could_dma, e.did_dma_after_crash, e.hit_capture_kernel, e.stopped_by_reset
        if e.faults and did.value is not True:
            out.append(f"{e.bdf}: {e.faults} faults in the capture kernel, but did DMA after crash {did}")
        if e.faults and did.basis != "observed":
            out.append(f"{e.bdf}: its faults are observed DMA after the crash, but the claim is {did.basis}")
        if did.value is True and could.value is False:
            out.append(f"{e.bdf}: did DMA after the crash, but could DMA {could}")
        if did.value is False and (stopped.applicable or hit.applicable):
            out.append(f"{e.bdf}: no DMA after the crash, but capture kernel {hit} / stopped by reset {stopped}")
        if stopped.value is False and did.value is not True:
            out.append(f"{e.bdf}: stopped by reset 'no' while DMA after the crash is {did}")
        if hit.value is True and could.value is False:
            out.append(f"{e.bdf}: hit the capture kernel, but could DMA {could}")
        if (hit.word == "faulted") != bool(e.faults):
            out.append(f"{e.bdf}: capture kernel '{hit.word}' with {e.faults} faults from it")
        if hit.value is True and hit.word not in ("faulted", "wrote"):
            out.append(f"{e.bdf}: capture kernel 'yes' without saying what happened: {hit}")
        if hit.word == "wrote" and not any("changed between the vmcore and the capture dump" in x
                                           or "crashkernel reservation" in x for x in hit.evidence):
            out.append(f"{e.bdf}: 'wrote' in the capture kernel without evidence of DMA overlapping it: {hit}")
        for name, c in (("could", could), ("did", did), ("capture", hit), ("stopped", stopped)):
            known = c.applicable and c.value is not None
            if known != (c.basis in BASES) or (not known and c.basis is not None):
                out.append(f"{e.bdf}: {name} is {c.word} with basis {c.basis!r}")
            if c.word not in WORDS:
                out.append(f"{e.bdf}: {name} says '{c.word}', a word the legend does not explain")
            if c.word == "yes" and c.basis == "inferred":
                out.append(f"{e.bdf}: {name} 'yes' rests on inference but does not say so")
        if did.value is False and did.word not in ("no evidence", "no"):
            out.append(f"{e.bdf}: did '{did.word}'")
        if did.word == "no" and "could not" not in str(did):
            out.append(f"{e.bdf}: did 'no' where the evidence is only its absence: {did}")
    return out


def broken_truth(path, v) -> list[str]:
    """The claims against QEMU's own trace of the run (run.json beside the dump): a device
    that "faulted" did so in QEMU's record, "wrote" only with DMA QEMU traced after the
    capture kernel's /init, and the sole e1000e NIC's DMA after the crash as QEMU saw it."""
    run_json = next((d / "run.json" for d in (path.parent, path.parent.parent) if (d / "run.json").is_file()), None)
    if run_json is None:
        return []
    events = json.loads(run_json.read_text())["qemu_events"]["counts"]
    after = {k: events.get("crash_to_capture_init", {}).get(k, 0) + events.get("after_capture_init", {}).get(k, 0)
             for k in set(events.get("crash_to_capture_init", {})) | set(events.get("after_capture_init", {}))}
    traced_faults = sum(n for k, n in after.items() if "fault" in k)
    out = []
    for e in v.endpoints:
        if e.hit_capture_kernel.word == "faulted" and not traced_faults:
            out.append(f"{e.bdf}: 'faulted' but QEMU traced no IOMMU fault after the crash")
        if e.hit_capture_kernel.word == "wrote" and not any(
                n for k, n in events.get("after_capture_init", {}).items() if ("written" in k and "not_written" not in k) or "complet" in k):
            out.append(f"{e.bdf}: 'wrote' but QEMU traced no DMA after the capture kernel's /init")
    nics = [e for e in v.endpoints if e.driver == "e1000e"]
    if len(nics) == 1:
        written = events.get("crash_to_capture_init", {}).get("e1000e_rx_written_to_guest", 0)
        did = nics[0].did_dma_after_crash
        # the crash marker is polled every 0.1 s: a few packets either side
        if did.value is False and written > 5:
            out.append(f"{nics[0].bdf}: did '{did.word}' but QEMU traced {written} receive writes after the crash")
        if did.value is True and did.basis == "inferred" and written == 0:
            out.append(f"{nics[0].bdf}: did DMA after the crash, but QEMU traced no receive write after it")
    return out


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_no_endpoint_carries_contradicting_claims(path):
    dump = dumpkit.open(path)
    if dump.kdump().capture_kernel:
        pytest.skip("a capture kernel's dump")
    v = judge(dump, find_capture_logs(path))
    assert broken_rules(v) == []
    assert broken_truth(path, v) == []


CAPTURE_DUMPS = [p for p in DUMPS if (p.parent / "capture-state.kdump").is_file()]


@pytest.mark.parametrize("path", CAPTURE_DUMPS, ids=[p.parent.name for p in CAPTURE_DUMPS])
def test_rules_hold_with_the_capture_dump_too(path):
    """With the running capture kernel's dump as well (copied tables read from memory, the
    rings compared between the two snapshots)."""
    vi = path.parent / "capture-vmcoreinfo.txt"
    cap = dumpkit.open(path.parent / "capture-state.kdump", **({"vmcoreinfo": vi} if vi.is_file() else {}))
    v = judge(dumpkit.open(path), find_capture_logs(path), cap)
    assert broken_rules(v) == []
    assert broken_truth(path, v) == []


def test_the_rules_can_fail():
    """The checker itself, on verdicts with the contradictions it looks for."""
    from dumpkit.verdict import Claim, EndpointVerdict, Verdicts

    bad = EndpointVerdict("0000:02:00.0", "nic", "e1000e", Claim(False, basis="observed"), Claim(None),
                          Claim(True, basis="observed"), Claim(False, basis="observed"), faults=1)
    broken = broken_rules(Verdicts([bad], [], None, [], {}))
    assert len(broken) == 6, broken          # fault/did, fault/basis, stopped no, hit/could, faulted word, 'yes'
    quiet = EndpointVerdict("0000:03:00.0", "nvme", "nvme", Claim(True, basis="observed"),
                            Claim(False, basis="inferred", phrase="no evidence"),
                            Claim(True, basis="inferred", term="wrote"), Claim(None, applicable=False))
    broken = broken_rules(Verdicts([quiet], [], None, [], {}))
    # no DMA yet a capture claim; 'wrote' without overlap; 'yes'... : did 'no' from absence
    assert len(broken) == 3, broken
