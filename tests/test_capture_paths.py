"""The capture paths users have, as the sample factory made them: each scenario's run.json
says how its capture kernel was loaded (kexec_load or kexec_file_load), what makedumpfile
wrote (kdump-compressed or ELF, dump level) and in which layout (ours, or Debian
kdump-tools' STAMP/dump.STAMP + dmesg.STAMP). Here every statement is checked against the
files themselves, and dumpkit's verdict runs on every path with the capture log."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CACHE, MANIFEST, SAMPLES

KEXEC_ELFCOREHDR = {"kexec_load": r"elfcorehdr=\d+K",                 # kexec-tools appends it
                    "kexec_file_load": r"elfcorehdr=0x[0-9a-f]+"}     # the kernel does
KEXEC_OPTION = {"kexec_load": "kexec -p -c", "kexec_file_load": "kexec -p -s"}
MAGIC = {"kdump-compressed": b"KDUMP   ", "ELF": b"\x7fELF"}


def _cache_scenarios() -> list[tuple[Path, str]]:
    """Every scenario of every kernel in the cache (one root per kernel release)."""
    return sorted({(m.parent, d["scenario"]) for m in (CACHE / "samples").glob("*/manifest.json")
                   for d in json.loads(m.read_text())["dumps"]})


CACHED = _cache_scenarios()
if not CACHED and os.environ.get("CI"):
    raise RuntimeError(f"no samples under {CACHE / 'samples'}: scripts/setup generates them")
COMMITTED = sorted({d["scenario"] for d in MANIFEST["dumps"]})
ALL = [(SAMPLES, sc) for sc in COMMITTED] + CACHED


def entry(root: Path, scenario: str) -> dict:
    dumps = json.loads((root / "manifest.json").read_text())["dumps"]
    return next(d for d in dumps if d["scenario"] == scenario and d["kind"] == "first-kernel vmcore")


def capture_path(root: Path, scenario: str) -> dict:
    """run.json's capture_path block ({} when there is none: the tests then say so)."""
    return json.loads((root / scenario / "run.json").read_text()).get("capture_path") or {}


def booted_cmdline(root: Path, scenario: str) -> str:
    """The capture kernel's command line: its own ground truth and its log's boot line."""
    return (root / scenario / "capture-ground-truth" / "cmdline.txt").read_text()


def ids(params):
    return [sc if root == SAMPLES else f"{root.name}/{sc}" for root, sc in params]


@pytest.mark.parametrize(("root", "scenario"), ALL, ids=ids(ALL))
def test_run_json_states_the_capture_path(root, scenario):
    cp = capture_path(root, scenario)
    assert cp, f"{root / scenario / 'run.json'} has no capture_path: made by an older generator"
    # -d 31 as kdump-tools writes by default; 23 on 7.x (see sample-dumps/generate DUMP_LEVEL_7X)
    assert cp["kexec"] in KEXEC_ELFCOREHDR and cp["format"] in MAGIC and cp["dump_level"] in (31, 23)
    assert cp["makedumpfile"].endswith(f"-d {cp['dump_level']}")
    assert cp["layout"] in ("dumpkit", "kdump-tools")
    assert root / scenario / cp["files"]["vmcore"] == root / entry(root, scenario)["file"]
    for f in cp["files"].values():
        assert (root / scenario / f).is_file(), f


@pytest.mark.parametrize(("root", "scenario"), ALL, ids=ids(ALL))
def test_kexec_call_shows_in_the_capture_kernel_command_line(root, scenario):
    cp = capture_path(root, scenario)
    want = KEXEC_ELFCOREHDR[cp["kexec"]]
    args = re.findall(r"\belfcorehdr=\S+", booted_cmdline(root, scenario))
    assert len(args) == 1 and re.fullmatch(want, args[0]), args
    log = (root / scenario / cp["files"]["capture_log"]).read_text(errors="replace")
    boot = re.search(r"Command line: (.*)", log).group(1)
    assert re.search(rf"\b{want}(\s|$)", boot), boot
    if root != SAMPLES:         # the committed samples predate the crash-image ground truth
        crash = json.loads((root / scenario / "run.json").read_text())["crash_image"]
        assert crash["kexec_crash_loaded"] == 1 and crash["kexec_call"] == KEXEC_OPTION[cp["kexec"]]
        (start, end), = crash["crash_reservation"]
        assert int(end, 16) - int(start, 16) + 1 == crash["kexec_crash_size"]
        truth = (root / scenario / "ground-truth" / "kexec-crash.txt").read_text()
        assert "kexec_crash_loaded 1" in truth and "Crash kernel" in truth


@pytest.mark.parametrize(("root", "scenario"), ALL, ids=ids(ALL))
def test_dump_format_and_level_are_what_run_json_says(root, scenario):
    cp = capture_path(root, scenario)
    dump = root / scenario / cp["files"]["vmcore"]
    with open(dump, "rb") as f:
        head = f.read(8192)
    assert head.startswith(MAGIC[cp["format"]]), head[:8]
    if cp["format"] == "kdump-compressed":
        # disk_dump_header.block_size, then kdump_sub_header.dump_level after phys_base
        block_size, = struct.unpack_from("<i", head, 428)
        with open(dump, "rb") as f:
            f.seek(block_size)
            sub = f.read(16)
        assert struct.unpack_from("<i", sub, 8)[0] == cp["dump_level"]


@pytest.mark.parametrize(("root", "scenario"), ALL, ids=ids(ALL))
def test_layout(root, scenario):
    cp = capture_path(root, scenario)
    files = cp["files"]
    if cp["layout"] == "dumpkit":
        assert files["vmcore"] in ("vmcore.kdump", "vmcore.elf")
        assert not [p for p in (root / scenario).iterdir() if re.fullmatch(r"\d{12}", p.name)]
        return
    # kdump-tools: STAMP/ with exactly dump.STAMP and dmesg.STAMP, as kdump-config leaves it
    m = re.fullmatch(r"(\d{12})/dump\.(\d{12})", files["vmcore"])
    assert m and m.group(1) == m.group(2), files
    stamp = m.group(1)
    assert files["dmesg"] == f"{stamp}/dmesg.{stamp}"
    assert sorted(p.name for p in (root / scenario / stamp).iterdir()) == [f"dmesg.{stamp}", f"dump.{stamp}"]
    # dmesg.STAMP is the crashed kernel's log (makedumpfile --dump-dmesg), not the capture kernel's
    dmesg = (root / scenario / files["dmesg"]).read_text(errors="replace")
    assert "sysrq: Trigger a crash" in dmesg and "elfcorehdr=" not in dmesg
    assert "elfcorehdr=" in (root / scenario / files["capture_log"]).read_text(errors="replace")


def dumpkit_verdict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", "verdict", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


CACHED_PARAMS = CACHED


@pytest.mark.parametrize(("root", "scenario"), CACHED_PARAMS, ids=ids(CACHED_PARAMS))
def test_verdict_on_every_capture_path_with_its_capture_log(root, scenario):
    cp = capture_path(root, scenario)
    kernel = json.loads((root / "manifest.json").read_text())["kernel"]
    r = dumpkit_verdict(root / scenario / cp["files"]["vmcore"], "--capture-log",
                        root / scenario / cp["files"]["capture_log"],
                        "--debuginfo", (root / kernel["debug_dir"]).resolve())
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


KDUMP_TOOLS = [(root, sc) for root, sc in CACHED_PARAMS if capture_path(root, sc).get("layout") == "kdump-tools"]


@pytest.mark.parametrize(("root", "scenario"), KDUMP_TOOLS, ids=ids(KDUMP_TOOLS))
def test_verdict_on_the_kdump_tools_directory_as_a_user_has_it(root, scenario):
    """Only what kdump-tools saved, the dump named as it names it: no option."""
    r = dumpkit_verdict(root / scenario / capture_path(root, scenario)["files"]["vmcore"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_failing_generation_ends_in_one_line_naming_the_scenario_and_its_console_log(tmp_path):
    """Three attempts that cannot finish (1 s each): each named with its console log, then
    one error line and exit 1, no traceback."""
    r = subprocess.run([sys.executable, str(SAMPLES / "generate"), "--scenario", "idle", "--out", str(tmp_path),
                        "--timeout", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    failed = re.findall(r"scenario idle: attempt (\d) failed: .* \(console log: (\S+)\)", r.stderr)
    assert [n for n, _ in failed] == ["1", "2", "3"] and all(Path(c).is_file() for _, c in failed)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("generate: error: scenario idle: 3 attempts failed") and failed[-1][1] in last
    for _, console in failed:
        shutil.rmtree(Path(console).parent, ignore_errors=True)
