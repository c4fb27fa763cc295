"""sample-dumps/generate on this machine: the committed kernel boots under QEMU/TCG,
crashes, and its capture kernel writes a vmcore that drgn reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import drgn
import pytest
from conftest import MANIFEST, REPO, SAMPLES
from drgn.helpers.linux.pci import for_each_pci_dev


@pytest.mark.slow
def test_generate_idle_scenario_gives_a_valid_vmcore(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "sample-dumps" / "generate"), "--scenario", "idle",
                        "--out", str(tmp_path), "--timeout", "240"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (entry,) = [d for d in manifest["dumps"] if d["kind"] == "first-kernel vmcore"]
    assert {d["kind"] for d in manifest["dumps"]} == {"first-kernel vmcore", "first-kernel vmcore, ELF"}
    assert entry["scenario"] == "idle" and entry["build_id"] == MANIFEST["kernel"]["build_id"]

    prog = drgn.Program()
    prog.set_core_dump(str(tmp_path / entry["file"]))
    prog.load_debug_info([str(SAMPLES / MANIFEST["kernel"]["debug_file"])])
    assert "sysrq_handle_crash" in [f.name for f in prog.crashed_thread().stack_trace()]
    in_dump = {d.dev.kobj.name.string_().decode() for d in for_each_pci_dev(prog)}
    truth = json.loads((tmp_path / "idle" / "ground-truth" / "pci.json").read_text())["devices"]
    assert in_dump == set(truth)
    # the regenerated topology is the committed one
    committed = json.loads((SAMPLES / "idle" / "ground-truth" / "pci.json").read_text())["devices"]
    assert {b: (d["vendor"], d["device"]) for b, d in truth.items()} == \
           {b: (d["vendor"], d["device"]) for b, d in committed.items()}

    # the capture path this run took, as run.json states it and the capture kernel booted
    # (kexec_load is not possible here: kexec-tools needs /proc/kcore, which this kernel
    # is built without; the stock-kernel scenarios have it)
    run = json.loads((tmp_path / "idle" / "run.json").read_text())
    assert run["capture_path"]["kexec"] == "kexec_file_load" and run["crash_image"]["kexec_crash_loaded"] == 1
    assert re.fullmatch(r"elfcorehdr=0x[0-9a-f]+", run["capture_path"]["capture_elfcorehdr"])
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "verdict", str(tmp_path / entry["file"]),
                        "--capture-log", str(tmp_path / "idle" / "capture-dmesg.txt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
