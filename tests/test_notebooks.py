"""Notebooks run headless with papermill on the sample dumps and show what they promise."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, SAMPLES

papermill = pytest.importorskip("papermill")


def outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("dump", ["nocopy-fault/vmcore.kdump", "patched-nocopy/capture-state.kdump"])
def test_01_investigate_runs_headless(tmp_path, dump):
    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "01-investigate.ipynb"), str(out),
                               parameters={"dump": str(SAMPLES / dump)}, cwd=str(REPO / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    outs = outputs(nb)
    assert not [o for o in outs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outs), "the tree picture is missing"
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
    assert "0000:02:00.0" in html and "e1000e" in html
    assert "6.1.192" in html


def test_committed_notebooks_have_no_outputs():
    for path in (REPO / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        assert not outputs(nb), f"{path.name} is committed with outputs"
