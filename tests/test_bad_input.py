"""Bad input: one line naming the problem and the fix, a documented exit code, no
traceback, no hang, and the input never modified."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ELF_DUMPS, SAMPLES, dump_path

import dumpkit.target.open as target_open
from dumpkit.cli import main
from dumpkit.errors import EXIT_CODES

VMCORE = SAMPLES / "idle" / "vmcore.kdump"
STATE = SAMPLES / "copied-traffic" / "capture-state.kdump"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dumpkit.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert code in EXIT_CODES
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dumpkit: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def truncated(src: Path, tmp_path: Path, fraction: float) -> Path:
    data = src.read_bytes()
    out = tmp_path / f"{src.stem}-{int(fraction * 100)}pct{src.suffix}"
    out.write_bytes(data[:int(len(data) * fraction)])
    return out


@pytest.fixture(scope="module")
def elf_vmcore() -> Path:
    """The ELF sample vmcore (makedumpfile -E in the capture kernel), unpacked."""
    (entry,) = ELF_DUMPS
    return dump_path(entry)


def test_missing_path():
    assert_one_line_error(run_cli("info", "/nonexistent/vmcore"), 3, "no such file")


def test_directory(tmp_path):
    assert_one_line_error(run_cli("pci", str(tmp_path)), 3, "directory")


def test_empty_file(tmp_path):
    (tmp_path / "vmcore").write_bytes(b"")
    assert_one_line_error(run_cli("info", str(tmp_path / "vmcore")), 3, "empty")


def test_random_bytes(tmp_path):
    (tmp_path / "vmcore").write_bytes(os.urandom(1 << 16))
    assert_one_line_error(run_cli("info", str(tmp_path / "vmcore")), 3, "not a kernel dump")


def test_compressed_dump_names_the_fix():
    (entry,) = ELF_DUMPS
    assert_one_line_error(run_cli("info", str(SAMPLES / entry["file"])), 3, "xz", "decompress")


def test_vmlinux_passed_as_dump():
    assert_one_line_error(run_cli("info", str(SAMPLES / "kernel" / "vmlinux.debug")), 3, "not a core dump")


@pytest.mark.parametrize("fraction", [0.1, 0.9])
def test_truncated_kdump(tmp_path, fraction):
    assert_one_line_error(run_cli("info", str(truncated(VMCORE, tmp_path, fraction))), 3, "truncated")


@pytest.mark.parametrize("fraction", [0.1, 0.9])
def test_truncated_elf(tmp_path, elf_vmcore, fraction):
    assert_one_line_error(run_cli("info", str(truncated(elf_vmcore, tmp_path, fraction))), 3, "truncated")


def test_complete_elf_vmcore_opens(elf_vmcore):
    r = run_cli("pci", str(elf_vmcore))
    assert r.returncode == 0, r.stderr
    assert "0000:02:00.0" in r.stdout


def test_wrong_debug_file():
    other = shutil.which("python3") or sys.executable
    r = run_cli("--debuginfo", os.path.realpath(other), "info", str(VMCORE))
    assert_one_line_error(r, 4, "build-id")


def test_debug_file_not_elf(tmp_path):
    (tmp_path / "vmlinux").write_text("not an ELF file\n")
    assert_one_line_error(run_cli("--debuginfo", str(tmp_path / "vmlinux"), "info", str(VMCORE)), 4, "not an ELF")


def test_no_debug_file_found(tmp_path):
    dump = tmp_path / "vmcore"
    shutil.copy(VMCORE, dump)
    r = run_cli("info", str(dump), env={"DUMPKIT_SAMPLES": ""})
    assert_one_line_error(r, 4, "no debug info found", "--debuginfo")


def run_main(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


def test_unreadable_file(tmp_path, monkeypatch, capsys):
    """As root every file is readable, so the denial is simulated where dumpkit opens the file."""
    import builtins

    from dumpkit.target import corefile

    dump = tmp_path / "vmcore"
    shutil.copy(VMCORE, dump)
    real_open = builtins.open

    def denying_open(path, *a, **kw):
        if Path(path) == dump:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(corefile, "open", denying_open, raising=False)
    code, err = run_main(capsys, "info", str(dump))
    assert code == 5 and len(err) == 1 and "permission denied" in err[0]


def test_proc_kcore_without_root(monkeypatch, capsys, tmp_path):
    (tmp_path / "kcore").write_bytes(b"")     # present, whether or not this machine has one
    monkeypatch.setattr(target_open, "KCORE", tmp_path / "kcore")
    monkeypatch.setattr(target_open.os, "access", lambda path, mode: False)
    code, err = run_main(capsys, "info", "live")
    assert code == 5 and len(err) == 1 and "needs root" in err[0] and "sudo" in err[0]


def test_proc_kcore_absent(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(target_open, "KCORE", tmp_path / "kcore")
    code, err = run_main(capsys, "info", "live")
    assert code == 3 and len(err) == 1 and "does not exist" in err[0]


def test_qmp_socket_absent(tmp_path):
    assert_one_line_error(run_cli("info", f"qmp:{tmp_path / 'qmp.sock'}"), 6, "QMP socket")


def test_vmcoreinfo_file_that_is_not_vmcoreinfo(tmp_path):
    (tmp_path / "vi.txt").write_text("hello\n")
    r = run_cli("--vmcoreinfo", str(tmp_path / "vi.txt"), "info", str(STATE))
    assert_one_line_error(r, 3, "VMCOREINFO")


def test_usage_error_exit_code():
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_inputs_are_never_modified():
    before = {p: sha256(p) for p in (VMCORE, STATE)}
    for p in before:
        assert run_cli("pci", "--json", str(p)).returncode == 0
        assert run_cli("info", "--sha256", str(p)).returncode == 0
    assert {p: sha256(p) for p in before} == before


def _patch_elf_phys(path: Path, paddr: int, data: bytes) -> None:
    """Overwrite guest-physical bytes in an ELF vmcore (through its PT_LOAD headers)."""
    import struct

    with open(path, "r+b") as f:
        ehdr = f.read(64)
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _fl, off, _va, pa, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type == 1 and pa <= paddr and paddr + len(data) <= pa + filesz:
                f.seek(off + paddr - pa)
                f.write(data)
                return
    raise AssertionError(f"{paddr:#x} not in {path}")


@pytest.mark.parametrize("damage", ["loop", "wild pointer"])
def test_corrupted_pci_device_list(tmp_path, elf_vmcore, damage):
    """The kernel's PCI device list damaged in a copy of the ELF vmcore: the functions before
    the damage are printed, then one error line, exit 7; never a hang or a traceback."""
    import dumpkit
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.mm import virt_to_phys

    broken = tmp_path / "vmcore.elf"
    shutil.copy(elf_vmcore, broken)
    prog = dumpkit.open(broken).prog
    klist = prog["pci_bus_type"].p.klist_devices.k_list
    nodes = [p.knode_bus.n_node for p in list_for_each_entry("struct device_private", klist.address_of_(),
                                                             "knode_bus.n_node")]
    victim, target = nodes[5], nodes[2]
    new_next = target.address_ if damage == "loop" else 0xFFFF888F_DEAD0000
    _patch_elf_phys(broken, virt_to_phys(prog, victim.next.address_of_()).value_(),
                    new_next.to_bytes(8, "little"))
    r = run_cli("pci", str(broken))
    assert_one_line_error(r, 7, "PCI device list")
    assert len([line for line in r.stdout.splitlines() if line.strip()]) >= 5
