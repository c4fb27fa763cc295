"""Fixtures over the committed sample dumps (sample-dumps/manifest.json)."""

from __future__ import annotations

import hashlib
import json
import re
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample-dumps"


def load_manifest() -> dict:
    return json.loads((SAMPLES / "manifest.json").read_text())


MANIFEST = load_manifest()
DUMPS = MANIFEST["dumps"]
FIRST_KERNEL_DUMPS = [d for d in DUMPS if d["kind"] == "first-kernel vmcore"]
CAPTURE_KERNEL_DUMPS = [d for d in DUMPS if d["kind"] == "capture-kernel dump"]


ELF_DUMPS = [d for d in DUMPS if d["kind"] == "first-kernel vmcore, ELF"]
_UNPACKED: dict[str, Path] = {}


CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")


# The stock kernel setup makes every scenario for (Debian 12's 6.1); the newer series have
# their own tests (test_stock_series.py), which pick their directories by series too
PRIMARY_SERIES = re.compile(r"6\.1\.")


def cached_samples(scenario: str, series: re.Pattern = PRIMARY_SERIES) -> Path | None:
    """The newest sample directory in the cache (scripts/setup generates them there) of a
    kernel of the series whose manifest has the scenario, or None."""
    found = []
    for m in (CACHE / "samples").glob("*/manifest.json"):
        data = json.loads(m.read_text())
        if series.match(data.get("kernel", {}).get("kernel_release", "")) \
                and any(d["scenario"] == scenario for d in data["dumps"]):
            found.append(m.parent)
    return max(found, key=lambda r: (r / "manifest.json").stat().st_mtime) if found else None


def load_generator():
    """sample-dumps/generate as a module (once), for tests of its definitions and readers."""
    import importlib.machinery
    import importlib.util

    if "dumpkit_generate" not in sys.modules:
        loader = importlib.machinery.SourceFileLoader("dumpkit_generate", str(REPO / "sample-dumps" / "generate"))
        mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("dumpkit_generate", loader))
        sys.modules["dumpkit_generate"] = mod       # its dataclasses look their module up
        loader.exec_module(mod)
    return sys.modules["dumpkit_generate"]


def cached_dump(root: Path, scenario: str, kind: str = "first-kernel vmcore") -> Path:
    """A cached scenario's dump as its manifest names it: the name depends on the
    scenario's capture path (vmcore.kdump, vmcore.elf, kdump-tools' STAMP/dump.STAMP)."""
    dumps = json.loads((root / "manifest.json").read_text())["dumps"]
    return root / next(d["file"] for d in dumps if d["scenario"] == scenario and d["kind"] == kind)


def needs_cached(scenario: str, root: Path | None):
    """A skip mark for tests of a cached scenario; in CI a missing one is an error."""
    if root is None and os.environ.get("CI"):
        raise RuntimeError(f"no {scenario} sample in the cache: scripts/setup generates it")
    return pytest.mark.skipif(root is None, reason=f"no {scenario} sample in the cache: run scripts/setup")


def dump_id(entry: dict) -> str:
    short = {"first-kernel vmcore": "vmcore", "capture-kernel dump": "capture",
             "first-kernel vmcore, ELF": "elf"}
    return f"{entry['scenario']}:{short[entry['kind']]}"


def dump_path(entry: dict) -> Path:
    """Where the dump can be opened: xz-compressed ones are unpacked once per session."""
    path = SAMPLES / entry["file"]
    if path.suffix != ".xz":
        return path
    if entry["file"] not in _UNPACKED:
        out = Path(tempfile.mkdtemp(prefix="dumpkit-test-")) / path.stem
        with lzma.open(path) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        _UNPACKED[entry["file"]] = out
    return _UNPACKED[entry["file"]]


@pytest.fixture(scope="session")
def manifest() -> dict:
    return MANIFEST


def scenario_dir(name: str) -> Path:
    return SAMPLES / name


def ground_truth_pci(scenario: str, capture: bool = False) -> dict:
    sub = "capture-ground-truth" if capture else "ground-truth"
    return json.loads((SAMPLES / scenario / sub / "pci.json").read_text())["devices"]


def capture_log(scenario: str) -> str:
    return (SAMPLES / scenario / "capture-dmesg.txt").read_text()


@pytest.fixture(scope="session")
def live_guest(tmp_path_factory):
    out = tmp_path_factory.mktemp("live")
    # generate's --timeout counts from its start, boot included: a busy host once took
    # nearly 300 s to boot it, and the guest was gone when the test came to read it. The
    # fixture ends the guest itself; the timeout only bounds a guest left behind.
    proc = subprocess.Popen([sys.executable, str(REPO / "sample-dumps" / "generate"), "--live",
                             "--out", str(out), "--timeout", "1800"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
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


# -- helpers shared by the test files -------------------------------------------------------

def sha256(path) -> str:
    """A file's SHA-256, read in 1 MiB blocks (dumps are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m dumpkit.cli ARGS`` in a child process, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def nic(scenario: str) -> str:
    """The e1000e NIC of a committed scenario, by the guest's own sysfs."""
    return next(b for b, d in ground_truth_pci(scenario).items() if d["driver"] == "e1000e")


def assert_pci_tree_equals(tree, gt: dict) -> None:
    """dumpkit's PCI tree against the guest's sysfs (ground-truth/pci.json "devices"),
    field for field."""
    assert [d.bdf for d in tree] == sorted(gt)
    for dev in tree:
        t = gt[dev.bdf]
        assert (dev.vendor, dev.device, dev.class_code, dev.revision) == \
               (t["vendor"], t["device"], t["class"], t["revision"]), dev.bdf
        assert dev.parent == t["parent_bridge"] and dev.pcie_port_type == t["pcie_port_type"], dev.bdf
        assert (dev.driver, dev.enable_count, dev.power_state, dev.iommu_group) == \
               (t["driver"], t["enable"], t["power_state"], t["iommu_group"]), dev.bdf
        if dev.driver:
            assert dev.is_busmaster == t["bus_master"], dev.bdf
        assert dev.unknown == {}, dev.bdf


# Files with one long test (a kernel build on a fresh cache, ~5 min; a regenerated scenario;
# a Dask cluster over every cached dump) run first: with `-n 2 --dist loadfile` a long file
# taken last keeps one worker busy while the other has nothing left to do
LONG_FIRST = ("test_kernel_patch.py", "test_regenerate.py", "test_fleet.py")


def pytest_collection_modifyitems(session, config, items):
    """Order the long files first (the same order on every worker: xdist requires it)."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))
