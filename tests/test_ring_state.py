"""An e1000e receive ring's state at the crash (full, partly processed, empty) against
QEMU's own trace of the same run: a ring the decoder calls full must be one the NIC could
not write into after the crash (QEMU traced receives it dropped for lack of descriptors,
with no IOMMU fault to explain them), and a partly processed one must not be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CACHE, FIRST_KERNEL_DUMPS, SAMPLES, dump_path

import dumpkit
from dumpkit.rings import ring_evidence
from dumpkit.target.walk import pci_devices

FAULT_EVENTS = ("vtd_dmar_fault", "amdvi_page_fault")


def scenarios() -> list[tuple[str, Path, Path]]:
    """(id, dump, run.json) of every committed first-kernel dump and every cached one."""
    out = [(e["scenario"], dump_path(e), SAMPLES / e["scenario"] / "run.json") for e in FIRST_KERNEL_DUMPS]
    for manifest in sorted((CACHE / "samples").glob("*/manifest.json")):
        for e in json.loads(manifest.read_text())["dumps"]:
            if e["kind"].startswith("first-kernel vmcore"):
                root = manifest.parent
                out.append((f"{root.name}/{e['scenario']}", root / e["file"], root / e["scenario"] / "run.json"))
    return out


def e1000e_rx_states(dump: Path) -> list[tuple[str, int]]:
    """(state, unprocessed) of every e1000e receive ring in the dump."""
    d = dumpkit.open(str(dump))
    out = []
    for _name, pdev in pci_devices(d.prog)[0]:
        ev = ring_evidence(d.prog, pdev)
        if ev.driver == "e1000e":
            out += [(q.state, q.unprocessed) for q in ev.queues if q.name.endswith(" rx")]
    return out


@pytest.mark.parametrize("name,dump,run", scenarios(), ids=[s[0] for s in scenarios()])
def test_a_full_ring_is_one_qemu_could_not_write_into(name, dump, run):
    states = e1000e_rx_states(dump)
    if not states:
        pytest.skip(f"{name}: no e1000e receive ring")
    phases = json.loads(run.read_text())["qemu_events"]["counts"]
    counts = phases["crash_to_capture_init"]
    dropped = counts.get("e1000e_rx_not_written_to_guest", 0)
    # the first packet dropped for a full ring comes when the next one arrives, which can be
    # after the capture kernel's /init (a fast capture kernel, a slow stream)
    dropped_later = phases.get("after_capture_init", {}).get("e1000e_rx_not_written_to_guest", 0)
    faulted = sum(counts.get(e, 0) for e in FAULT_EVENTS)
    for state, unprocessed in states:
        assert state in ("full", "partly processed", "empty"), (name, state)
        if state == "full":
            assert (dropped or dropped_later) and not faulted, (name, state, dropped, dropped_later, faulted)
        elif state == "partly processed" and not faulted:
            assert not dropped, (name, state, unprocessed, dropped)
