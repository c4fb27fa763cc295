"""dumpkit.kernel's accessors on every committed and cached dump (custom 6.1, Debian's
6.1 and, when generated, 6.12) against the guest's own sysfs: device names, bound
drivers and IOMMU groups; driver_override read from wherever the kernel keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CACHE, FIRST_KERNEL_DUMPS, SAMPLES, dump_path

import dumpkit
from dumpkit.kernel import device_name, has_member, iommu_group_id, pci_driver_name, pci_driver_override
from dumpkit.target.walk import pci_devices


def dumps() -> list[tuple[str, Path, Path]]:
    """(id, dump, ground-truth pci.json) of every first-kernel dump, committed and cached."""
    out = [(e["scenario"], dump_path(e), SAMPLES / e["scenario"] / "ground-truth" / "pci.json")
           for e in FIRST_KERNEL_DUMPS]
    for manifest in sorted((CACHE / "samples").glob("*/manifest.json")):
        for e in json.loads(manifest.read_text())["dumps"]:
            if e["kind"].startswith("first-kernel vmcore"):
                root = manifest.parent
                out.append((f"{root.name}/{e['scenario']}", root / e["file"],
                            root / e["scenario"] / "ground-truth" / "pci.json"))
    return [d for d in out if d[2].is_file()]


@pytest.mark.parametrize("name,dump,truth", dumps(), ids=[d[0] for d in dumps()])
def test_accessors_read_what_sysfs_said(name, dump, truth):
    gt = json.loads(truth.read_text())["devices"]
    prog = dumpkit.open(str(dump)).prog
    seen = set()
    for bdf, pdev in pci_devices(prog)[0]:
        assert device_name(pdev.dev) == bdf
        t = gt[bdf]
        assert pci_driver_name(pdev) == t["driver"], bdf
        assert iommu_group_id(pdev.dev) == t["iommu_group"], bdf
        # sysfs's driver_override (the VFIO scenarios set vfio-pci); samples recorded
        # before the factory saved it set none
        assert pci_driver_override(pdev) == t.get("driver_override"), bdf
        seen.add(bdf)
    assert seen == set(gt)
    # the member is in one of the two places, whichever the kernel chose
    assert has_member(prog, "struct pci_dev", "driver_override") != \
        has_member(prog, "struct device", "driver_override"), name
