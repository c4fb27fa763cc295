"""`dumpkit report`: the notebooks shipped in the package, rendered to HTML for one dump (naming
no other) or a before/after pair, with provenance of every input; from a wheel install too."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MANIFEST, REPO, SAMPLES

import dumpkit
from dumpkit.errors import InputError, OutputError
from dumpkit.report import (BEFORE_AFTER, SINGLE_DUMP, capture_logs, capture_timeline, copy_notebooks,
                            notebook_names, render_report)

pytest.importorskip("papermill")
pytest.importorskip("nbconvert")

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
SCENARIOS = sorted({d["scenario"] for d in MANIFEST["dumps"]})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def other_dumps_named(html: str, own: set[str]) -> list[str]:
    """The other sample dumps a report names: their scenario names (committed ones and the
    stock-kernel ones in the cache) as whole words, "idle" only as a directory in a path."""
    stock = {d["scenario"] for m in CACHE.glob("samples/*/manifest.json")
             for d in json.loads(m.read_text())["dumps"]}
    found = []
    for s in sorted((set(SCENARIOS) | stock) - own):
        word = rf"(?<![\w-]){re.escape(s)}(?![\w-])"
        if re.search(word if "-" in s else rf"/{re.escape(s)}/", html):
            found.append(s)
    return found


def visible_text(html: str) -> str:
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    text = re.sub(r"<img\b[^>]*>", " [picture] ", text)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).replace("&#39;", "'").replace("&quot;", '"')


def pictures(html: str) -> int:
    return len(re.findall(r'<img\b[^>]*src="data:image/png', html))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nocopy-fault.html"
    render_report(SAMPLES / "nocopy-fault" / "vmcore.kdump", out)
    return out.read_text()


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "before-after.html"
    render_report(str(SAMPLES / "copied-traffic" / "vmcore.kdump"), str(out),
                  after=str(SAMPLES / "patched-copied" / "vmcore.kdump"))
    return out.read_text()


def test_single_dump_report_names_no_other_dump(single):
    # the check itself finds what it looks for
    assert other_dumps_named("a/idle/vmcore.kdump, patched-nocopy; distro-nocopy-fault", {"nocopy-fault"}) == \
        sorted({"idle", "patched-nocopy"} | ({"distro-nocopy-fault"} if STOCK else set()))
    assert other_dumps_named("do_idle nocopy-faults", {"nocopy-fault"}) == []
    assert str(SAMPLES / "nocopy-fault" / "vmcore.kdump") in single
    found = other_dumps_named(single, {"nocopy-fault"})
    assert not found, f"the report of nocopy-fault names {found}"


def test_single_dump_report_shows_the_dump(single):
    text = visible_text(single)
    order = ["Conclusion", "The PCI tree", "Claims per endpoint", "Faults resolved to buffers",
             "Capture-kernel timeline", "Details", "Modules", "PCI functions", "kdump state", "IOMMU state",
             "Provenance"]
    at = [text.find(f"{h} ¶") for h in order]
    assert -1 not in at and at == sorted(at), dict(zip(order, at, strict=True))
    assert "Kernel panic - not syncing: sysrq triggered crash" in text
    assert "no loadable modules in this kernel" in text
    assert "e1000e RX descriptor ring" in text
    assert "PTE Read access is not set" in text and "DMA translation tables: copy failed" in text
    assert "interrupt-remapping table: copied" in text and "table-copy copied" not in text
    assert pictures(single) == 2       # the tree, the timeline
    assert "Traceback" not in single


def test_the_conclusion_comes_first_and_names_the_endpoint(single):
    text = visible_text(single)
    head = text[:text.find("The PCI tree ¶")]
    assert "Conclusion" in head and "1 endpoint kept doing DMA after the crash" in head
    at = head.find("0000:02:00.0 82574L Gigabit Network Connection [e1000e]")   # its own sentence
    assert at != -1, head
    sentence = head[at:]
    assert "DMA after the crash yes" in sentence and "in the capture kernel: faulted" in sentence
    assert "IOMMU fault" in sentence          # the evidence, as the verdict words it
    assert text.find("Provenance ¶") > text.find("IOMMU state ¶")


def test_tables_read_as_words_and_hex(single):
    text = visible_text(single[single.find("Conclusion"):single.find("Provenance")])
    for raw in ("NaN", "None", "True", "False", "<NA>"):
        assert not re.search(rf"(?<![\w-]){raw}(?![\w-])", text), raw
    body = single[single.find("Conclusion"):single.find("Provenance")]
    assert not re.findall(r"<td[^>]*>\s*-?\d+\.0\s*</td>", body)    # 81.0: an int through a float
    assert re.search(r"<td[^>]*>\s*81\s*</td>", body)                # the NIC's completions, as an int
    assert "0xd000000-0x16ffffff" in text            # crash_kernel_reserved as a range
    assert "command register (last saved copy)" in text and "0x507" in text and "1287" not in text
    assert "0xffffc000" in text                       # the fault's IOVA
    assert "16 MiB" in text and "16777216" not in text
    assert "none: every field was determined" in text  # no empty table


def test_code_is_hidden_unless_asked(single, tmp_path):
    cells = re.findall(r'<div class="jp-Cell jp-CodeCell([^"]*)"', single)
    assert cells and all("jp-mod-noInput" in c for c in cells)
    assert "from dumpkit.report_tables import" not in visible_text(single)
    out = tmp_path / "code.html"
    render_report(SAMPLES / "idle" / "vmcore.kdump", out, show_code=True)
    code = visible_text(out.read_text())
    assert "from dumpkit.report_tables import" in code
    assert "capture_log = [" in code and "capture_log = None" not in code   # papermill's cell, not the defaults


def test_the_notebooks_own_defaults_are_not_in_the_report(single):
    # the provenance says what ran; the notebook's defaults cell is dropped (code shown or not)
    assert "capture_log=['" in visible_text(single) and "capture_log = None" not in visible_text(single)


def test_before_after_report(before_after):
    text = visible_text(before_after)
    prov = text.split("Provenance ¶")[1]
    for scenario in ("copied-traffic", "patched-copied"):
        dump, log = SAMPLES / scenario / "vmcore.kdump", SAMPLES / scenario / "capture-dmesg.txt"
        assert str(dump) in prov and sha256(dump) in prov
        assert str(log) in prov and sha256(log) in prov
    assert ", after='" in prov and ", after_capture_log=['" in prov
    head = text[:text.find("The trees, endpoints by verdict ¶")]
    assert "What changed" in head and "endpoints changed from before to after" in head
    assert "0000:02:00.0" in head and "stopped by a reset no → yes" in head
    assert "stopped by reset" in text and "0000:00:02.0 reset" in text
    assert pictures(before_after) == 4   # what changed, two trees, timeline
    found = other_dumps_named(before_after, {"copied-traffic", "patched-copied"})
    assert not found, found


def test_explicit_debuginfo_and_no_capture_log(tmp_path):
    vmlinux = (SAMPLES / MANIFEST["kernel"]["debug_file"]).resolve()
    out = tmp_path / "r.html"
    render_report(SAMPLES / "idle" / "vmcore.kdump", out, capture_log=[], debuginfo=[vmlinux])
    text = visible_text(out.read_text())
    prov = text.split("Provenance ¶")[1]
    assert str(vmlinux) in prov and MANIFEST["kernel"]["build_id"] in prov and "explicit" in prov
    assert "Capture logs ¶ none" in prov
    assert "no capture-kernel log given or saved beside the dump" in text
    assert not other_dumps_named(out.read_text(), {"idle"})


def test_a_capture_log_of_another_crash_is_refused(tmp_path):
    with pytest.raises(InputError) as e:
        render_report(SAMPLES / "nocopy-fault" / "vmcore.kdump", tmp_path / "r.html",
                      capture_log=SAMPLES / "copied-traffic" / "capture-dmesg.txt")
    assert type(e.value).__name__ == "CaptureMismatch" and e.value.exit_code == 3
    assert "from another crash" in str(e.value)
    assert not (tmp_path / "r.html").exists()


def test_notebook_choice_is_checked(tmp_path):
    dump = SAMPLES / "idle" / "vmcore.kdump"
    with pytest.raises(InputError, match="no notebook 99-nothing"):
        render_report(dump, tmp_path / "r.html", notebook="99-nothing")
    with pytest.raises(InputError, match="does not take one dump"):
        render_report(dump, tmp_path / "r.html", notebook="03-batch-triage")
    with pytest.raises(InputError, match="compares nothing"):
        render_report(dump, tmp_path / "r.html", notebook=SINGLE_DUMP, after=dump)
    with pytest.raises(InputError, match="capture log .*nope.txt: no such file"):
        render_report(dump, tmp_path / "r.html", capture_log=tmp_path / "nope.txt")
    with pytest.raises(InputError):
        render_report(tmp_path / "missing.kdump", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_notebooks_ship_in_the_package_and_copy_out(tmp_path):
    names = notebook_names()
    assert {SINGLE_DUMP, BEFORE_AFTER, "03-batch-triage", "04-live"} <= set(names)
    written = copy_notebooks(tmp_path / "nb")
    assert sorted(p.name for p in written) == sorted(f"{n}.ipynb" for n in names)
    for p in written:
        nb = json.loads(p.read_text())
        assert nb["nbformat"] == 4
        params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1, p.name
        src = "".join(params[0]["source"])
        assert "sample-dumps" not in src and ".kdump" not in src, f"{p.name} defaults to a sample dump"
    with pytest.raises(OutputError, match="already holds"):
        copy_notebooks(tmp_path / "nb")
    assert len(copy_notebooks(tmp_path / "nb", overwrite=True)) == len(names)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError):
        copy_notebooks(tmp_path / "file")


def test_every_dump_notebook_takes_debuginfo_and_capture_log():
    import papermill

    for name in notebook_names():
        with importlib.resources.as_file(importlib.resources.files("dumpkit") / "notebooks" / f"{name}.ipynb") as p:
            params = papermill.inspect_notebook(str(p))
        assert "debuginfo" in params, name
        if "dump" in params:
            assert "capture_log" in params, name


def test_capture_logs_and_timeline():
    dump = SAMPLES / "patched-nocopy" / "vmcore.kdump"
    assert capture_logs(dump) == [str(SAMPLES / "patched-nocopy" / "capture-dmesg.txt")]
    assert capture_logs(dump, []) == [] and capture_logs(dump, "x.txt") == ["x.txt"]
    assert capture_logs("live") == []
    events = capture_timeline(capture_logs(dump), "after")
    resets = [e for e in events if e["event"].startswith("kdump: secondary bus reset")]
    assert {e["device"] for e in resets} >= {"0000:00:02.0", "0000:00:03.0"}
    assert all(e["time"] is not None and e["side"] == "after" for e in resets)
    assert any(e["event"] == "kdump: not reset: VGA below" and e["device"] == "0000:00:01.0" for e in events)
    times = [e["time"] for e in events if e["time"] is not None]
    assert times == sorted(times)
    faults = capture_timeline(SAMPLES / "nocopy-fault" / "capture-dmesg.txt")
    assert any(e["event"] == "dma-remap PTE Read access is not set" and e["device"] == "02:00.0" for e in faults)


# --- Debian's stock kernel (modules with their own debug files), when scripts/setup made them ---

def _stock_sample() -> tuple[Path, Path] | None:
    for manifest in sorted(CACHE.glob("samples/*/manifest.json"), key=lambda m: m.stat().st_mtime, reverse=True):
        data = json.loads(manifest.read_text())
        dump = manifest.parent / "distro-nocopy-fault" / "vmcore.kdump"
        if data.get("kernel", {}).get("debug_dir") and dump.is_file():
            return dump, (manifest.parent / data["kernel"]["debug_dir"]).resolve()
    return None


STOCK = _stock_sample()


@pytest.mark.skipif(STOCK is None, reason="no stock-kernel samples in the cache: run scripts/setup")
def test_single_dump_report_of_a_stock_kernel_dump(tmp_path):
    dump, debug_dir = STOCK
    out = tmp_path / "stock.html"
    render_report(dump, out, debuginfo=[debug_dir])
    html = out.read_text()
    text = visible_text(html)
    prov = text.split("Provenance ¶")[1]
    assert str(dump) in prov and sha256(dump) in prov
    opened = dumpkit.open(dump, debuginfo=[debug_dir])
    assert opened.debug.path in prov and opened.debug.build_id in prov
    with_debug = [m for m in opened.modules() if m.debug_file]
    assert with_debug and any(m.name == "e1000e" for m in with_debug)
    for m in with_debug:
        assert m.debug_file in prov and m.build_id in prov, m.name
    assert f"{len(opened.modules())} modules, {len(with_debug)} with debug info" in text
    assert "DMA after crash" in text and "e1000e" in text
    assert not other_dumps_named(html, {"distro-nocopy-fault"})


# --- a wheel install ---------------------------------------------------------------------

def _can_build_wheels() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or ((major, minor) >= (68, 0) and importlib.util.find_spec("wheel") is not None)


@pytest.mark.slow
def test_report_from_a_wheel_install(tmp_path):
    """`pip install` of the package (not editable) into a new venv renders a report: the
    notebooks come from the installed package, the notebook kernel runs the venv's Python."""
    src = tmp_path / "src"     # a copy: building in the shared tree would write build/ and egg-info there
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "dumpkit", src / "dumpkit", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the venv reuses the installed dependencies; the build uses this Python's setuptools when it can
    # build wheels (pyproject.toml asks for setuptools>=68), else pip fetches them for an isolated build
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", *isolation, str(src)], check=True,
                   timeout=600)
    work = tmp_path / "work"   # not the checkout: nothing may import dumpkit from the repository
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import dumpkit.report as r; print(r.__file__); "
                                           "print(','.join(r.notebook_names()))"],
                           cwd=work, check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(venv)) and SINGLE_DUMP in where[1].split(",")
    out = work / "report.html"
    dump = SAMPLES / "nocopy-fault" / "vmcore.kdump"
    run = subprocess.run([str(py), "-c", "import sys; from dumpkit.report import render_report; "
                                         "render_report(sys.argv[1], sys.argv[2])", str(dump), str(out)],
                         cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    html = out.read_text()
    assert sha256(dump) in html and "0000:02:00.0 82574L Gigabit Network Connection [e1000e]" in html
    assert str(py) in html or str(venv) in html      # provenance: the Python that ran it
    assert not other_dumps_named(html, {"nocopy-fault"})
