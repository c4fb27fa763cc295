"""In a real browser (Debian's headless Chromium driven by Playwright): JupyterLab, started
here, opens the investigate notebook on a sample dump and runs it, and its tree picture is
found in the page; the HTML report of the same dump, in the same browser at 1280 px, has no
horizontal scroll (neither the page nor any box inside it) and states its conclusion on the
first screen (1280×800)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import SAMPLES

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
                                             if os.access(p, os.X_OK)), None)
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: run scripts/setup "
                                                                "(pip install playwright)")
pytest.importorskip("jupyterlab", reason="JupyterLab is missing: pip install 'dumpkit[notebooks]'")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed and could not be: "
                                                          "run scripts/setup as root (apt-get install chromium)")]

WIDTH, HEIGHT = 1280, 800
DUMP = SAMPLES / "nocopy-fault" / "vmcore.kdump"
# every box that scrolls sideways: its content is wider than it
OVERFLOWING = """() => Array.from(document.querySelectorAll('*')).filter(e =>
    e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
    .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free port of localhost, in a directory holding the investigate
    notebook with ``dump`` set to a sample; yields (base URL, token, notebook name)."""
    from dumpkit.report import copy_notebooks

    root = tmp_path_factory.mktemp("lab")
    nb_path = next(p for p in copy_notebooks(root) if p.name == "01-investigate.ipynb")
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]).replace("dump = None", f"dump = {str(DUMP)!r}", 1)
    nb_path.write_text(json.dumps(nb))
    port, token = _free_port(), "dumpkit-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter-config")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.allow_root=True"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(root / "lab.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token, nb_path.name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_jupyterlab_runs_the_notebook_and_shows_the_tree(browser, lab):
    base, token, name = lab
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=90_000)   # the kernel's status bar
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.locator(".lm-Menu-itemLabel").filter(has_text=re.compile(r"^Run All Cells$")).first.click()
    select = page.locator(".jp-Dialog button:has-text('Select')")    # JupyterLab may ask which kernel: its own
    if select.count():
        select.click()
    # the tree picture: the image in the output of the cell after the "The PCI tree" heading
    tree = page.locator(".jp-Cell:has(h2:has-text('The PCI tree')) ~ .jp-CodeCell .jp-OutputArea-output img").first
    try:
        tree.wait_for(state="attached", timeout=180_000)
    except playwright.TimeoutError:
        page.screenshot(path=str(Path(os.environ.get("DUMPKIT_BROWSER_SHOTS", "/tmp")) / "jupyterlab-failed.png"),
                        full_page=True)
        raise
    tree.scroll_into_view_if_needed()
    size = tree.evaluate("img => [img.naturalWidth, img.naturalHeight, img.complete]")
    assert size[2] and size[0] > 400 and size[1] > 400, size
    assert "image/png" in tree.get_attribute("src")
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=180_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, tracebacks[:1]
    conclusion = page.locator(".dk-conclusion").first
    assert "0000:02:00.0" in conclusion.inner_text() and "e1000e" in conclusion.inner_text()
    page.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from dumpkit.report import render_report

    out = tmp_path_factory.mktemp("browser-report") / "report.html"
    render_report(DUMP, out)
    return out


def test_report_has_no_horizontal_scroll_and_the_conclusion_first(browser, report):
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.evaluate(OVERFLOWING) == []
    # the conclusion's bottom line and its first endpoint sentence are on the first screen
    bottom = page.locator(".dk-conclusion .dk-bottom").first
    first = page.locator(".dk-conclusion li").first
    for box in (bottom.bounding_box(), first.bounding_box()):
        assert box is not None and box["y"] + box["height"] <= HEIGHT, box
    assert "0000:02:00.0" in first.inner_text() and "e1000e" in first.inner_text()
    # the provenance is last, and no code is shown
    headings = page.locator("h1, h2").all_inner_texts()
    assert headings[-1].startswith("Provenance"), headings
    assert page.locator(".jp-CodeCell .jp-InputArea").count() == 0
    page.close()


def test_the_check_finds_a_sideways_scroll(browser, tmp_path):
    """The overflow check is not vacuous: a page with a wide table in a scrolling box fails it."""
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    wide = tmp_path / "wide.html"
    wide.write_text("<div style='overflow-x:auto'><table><tr>" + "<td>0x0123456789abcdef</td>" * 120
                    + "</tr></table></div>")
    page.goto(wide.as_uri())
    assert page.evaluate(OVERFLOWING)
    page.close()
