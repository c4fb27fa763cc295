"""Third-party ring decoders: a package with a ``dumpkit.rings`` entry point, built in a
temporary directory, is found through importlib.metadata and used for its driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import SAMPLES

PLUGIN = textwrap.dedent('''
    from dumpkit.rings.base import QueueEvidence, RingDecoder

    def decode(prog, pdev):
        return [QueueEvidence("plug-in queue", 8, 3, 0, 3, [0x1000, 0x2000, 0x3000])]

    DECODER = RingDecoder("toy-virtio", "9.9", ("virtio-pci",), (), decode)
    BROKEN = object()
''')


def _install(tmp_path, entry: str) -> dict:
    pkg = tmp_path / "site"
    (pkg / "toy_rings").mkdir(parents=True)
    (pkg / "toy_rings" / "__init__.py").write_text(PLUGIN)
    info = pkg / "toy_rings-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-rings\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dumpkit.rings]\ntoy = {entry}\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")]))


SCRIPT = textwrap.dedent('''
    import json, sys
    import dumpkit
    from drgn.helpers.linux.pci import for_each_pci_dev
    from dumpkit.rings import ring_evidence
    d = dumpkit.open(sys.argv[1])
    out = {}
    for pdev in for_each_pci_dev(d.prog):
        ev = ring_evidence(d.prog, pdev)
        out[ev.device] = [ev.driver, ev.decoder, ev.unprocessed]
    print(json.dumps(out))
''')


def test_entry_point_decoder_is_used_for_its_driver(tmp_path):
    env = _install(tmp_path, "toy_rings:DECODER")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(SAMPLES / "idle" / "vmcore.kdump")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    virtio = [r for r in rows.values() if r[0] == "virtio-pci"]
    assert virtio and all(r[1] == "toy-virtio 9.9" and r[2] == 3 for r in virtio)
    assert any(r[0] == "e1000e" and r[1] == "e1000e 1" for r in rows.values())


def test_broken_plugin_is_skipped_with_one_line(tmp_path):
    env = _install(tmp_path, "toy_rings:BROKEN")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(SAMPLES / "idle" / "vmcore.kdump")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "plug-in toy (toy_rings:BROKEN) skipped" in proc.stderr and "Traceback" not in proc.stderr
    rows = json.loads(proc.stdout)
    assert any(r[0] == "virtio-pci" and r[1] == "virtio 1" for r in rows.values())
