"""Fixtures over the committed sample dumps (sample-dumps/manifest.json)."""

from __future__ import annotations

import json
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


def dump_id(entry: dict) -> str:
    return f"{entry['scenario']}:{'vmcore' if entry['kind'] == 'first-kernel vmcore' else 'capture'}"


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
