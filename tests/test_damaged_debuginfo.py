"""Debug files that are damaged: one line naming the file, never a traceback. The cases
are copies of the real debug files with bytes flipped: inside the committed kernel's
zlib-compressed .debug_info (drgn: "libelf error: cannot decompress data", raised at the
first lookup, not at loading), and inside a stock kernel module's .debug_abbrev (drgn's
BadDataError, which leaves the program that indexed it unusable)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import CACHE, SAMPLES, run_cli

VMCORE = SAMPLES / "idle" / "vmcore.kdump"
VMLINUX = SAMPLES / "kernel" / "vmlinux.debug"


def _section(path: Path, name: str) -> tuple[int, int]:
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if name in fields:
            i = fields.index(name)
            return int(fields[i + 3], 16), int(fields[i + 4], 16)
    raise LookupError(name)


def _flip(src: Path, dst: Path, section: str, skip: int) -> Path:
    dst.write_bytes(src.read_bytes())
    off, size = _section(dst, section)
    assert size > skip + 64
    with open(dst, "r+b") as f:
        f.seek(off + skip)
        data = f.read(64)
        f.seek(off + skip)
        f.write(bytes(b ^ 0xFF for b in data))
    return dst


def _one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dumpkit: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "directory"])
def test_damaged_kernel_debug_file_is_named(tmp_path, as_dir):
    where = tmp_path / "debug" if as_dir else tmp_path
    where.mkdir(exist_ok=True)
    bad = _flip(VMLINUX, where / ("vmlinux" if as_dir else "kernel.debug"), ".debug_info", 4096)
    for command in ("info", "verdict"):
        r = run_cli(command, str(VMCORE), "--debuginfo", str(where if as_dir else bad))
        _one_line(r, 4, str(bad), "cannot be read", "copy or unpack it again")


def _distro() -> tuple[Path, Path] | None:
    """A cached stock-kernel dump with modules and the kernel's unpacked debug directory."""
    for m in sorted((CACHE / "samples").glob("*/manifest.json")):
        manifest = json.loads(m.read_text())
        debug_dir = manifest.get("kernel", {}).get("debug_dir")
        dumps = [d for d in manifest["dumps"] if d["kind"] == "first-kernel vmcore"]
        if debug_dir and dumps:
            return m.parent / dumps[0]["file"], (m.parent / debug_dir).resolve()
    return None


DISTRO = _distro()


@pytest.mark.skipif(DISTRO is None, reason="no stock-kernel sample in the cache: run scripts/setup")
def test_damaged_module_debug_file_costs_that_module_only(tmp_path):
    dump, debug = DISTRO
    good = next(debug.rglob("e1000e.ko"))
    bad = _flip(good, tmp_path / "e1000e.ko", ".debug_abbrev", 16)
    boot = next(debug.rglob("vmlinux-*")).parent
    r = run_cli("info", str(dump), "--debuginfo", str(boot), "--debuginfo", str(bad))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("e1000e "))
    assert f"{bad} cannot be read" in line, line
    r = run_cli("verdict", str(dump), "--json", "--debuginfo", str(boot), "--debuginfo", str(bad))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    nic = next(e for e in json.loads(r.stdout)["endpoints"] if e["driver"] == "e1000e")
    assert nic["did_dma_after_crash"] is None                  # its rings need e1000e's types
