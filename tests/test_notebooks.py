"""Notebooks (``notebooks/`` at the top of the repository, shipped in the package as
``dumpkit/notebooks/``) run headless with papermill on the sample dumps and show what
they promise."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, SAMPLES

papermill = pytest.importorskip("papermill")

NOTEBOOKS = REPO / "notebooks"


def outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("dump", ["nocopy-fault/vmcore.kdump", "patched-nocopy/capture-state.kdump"])
def test_01_investigate_runs_headless(tmp_path, dump):
    nb = run_notebook(tmp_path, "01-investigate", {"dump": str(SAMPLES / dump)})
    outs = outputs(nb)
    assert any("image/png" in o.get("data", {}) for o in outs), "the tree picture is missing"
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
    assert "0000:02:00.0" in html and "e1000e" in html
    assert "6.1.192" in html
    text = "".join("".join(o.get("text", "")) for o in outs)
    assert "IOMMU: intel-vtd" in text and "no loadable modules in this kernel" in text
    # every section ends with what to look for in it
    nb_src = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert sum(src.startswith("*What to look for:*") for src in nb_src) >= 5


def test_01_without_a_dump_says_what_to_set(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="set dump"):
        run_notebook(tmp_path, "01-investigate", {})


def test_committed_notebooks_have_no_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(paths) >= 4
    for path in paths:
        nb = json.loads(path.read_text())
        assert not outputs(nb), f"{path.name} is committed with outputs"
        assert all(c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code"), path.name


def run_notebook(tmp_path, name: str, parameters: dict) -> dict:
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    assert not [o for o in outputs(nb) if o["output_type"] == "error"]
    return nb


def test_02_before_after_runs_headless(tmp_path):
    nb = run_notebook(tmp_path, "02-dma-at-crash-before-after",
                      {"dump": str(SAMPLES / "copied-traffic" / "vmcore.kdump"),
                       "after": str(SAMPLES / "patched-copied" / "vmcore.kdump")})
    outs = outputs(nb)
    assert sum("image/png" in o.get("data", {}) for o in outs) == 4   # what changed, two trees, timeline
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outs)
    assert "stopped by a reset <b>no → yes</b>" in html and "0000:00:02.0 reset" in html


def test_03_fleet_views_run_headless(tmp_path):
    nb = run_notebook(tmp_path, "03-batch-triage", {"paths": [str(SAMPLES / "idle"), str(SAMPLES / "nocopy-fault")],
                                                     "jobs": 1})
    outs = outputs(nb)
    assert any("image/png" in o.get("data", {}) for o in outs)
    text = "".join("".join(o.get("text", "")) for o in outs)
    # idle and nocopy-fault vmcores, and the capture-state dump attached to its crash
    assert "dumps: 3 (2 crashes)" in text
    plain = "".join("".join(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert "e1000e" in plain and "no failures" in plain


@pytest.mark.slow
def test_04_live_runs_headless_on_a_qemu_guest(tmp_path, live_guest):
    source, _out = live_guest
    nb = run_notebook(tmp_path, "04-live", {"dump": source})
    assert any("image/png" in o.get("data", {}) for o in outputs(nb))
