"""Fixtures over the committed sample dumps (sample-dumps/manifest.json)."""

from __future__ import annotations

import json
import lzma
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
