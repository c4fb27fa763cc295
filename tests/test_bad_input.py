"""Bad input: one line naming the problem and the fix, a documented exit code, no
traceback, no hang, and the input never modified."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ELF_DUMPS, SAMPLES, dump_path, sha256

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
    # options that do not go together are usage errors too, found before any work
    for args in (["triage", str(VMCORE), "--format", "parquet"],
                 ["triage", str(VMCORE), "--engine", "fork", "--scheduler", "tcp://127.0.0.1:1"]):
        r = run_cli(*args)
        assert_one_line_error(r, 2, args[-2])


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
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.mm import virt_to_phys

    import dumpkit

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


# --- files that are not what they claim: refused with one line, before drgn sees them --------

def test_fifo_as_dump_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "vmcore"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("info", str(fifo)), 3, "FIFO", "not a dump file")


def test_vmcoreinfo_of_random_bytes(tmp_path):
    (tmp_path / "vmcoreinfo").write_bytes(os.urandom(4096))
    r = run_cli("--vmcoreinfo", str(tmp_path / "vmcoreinfo"), "info", str(STATE))
    assert_one_line_error(r, 3, "VMCOREINFO")


def test_vmcoreinfo_that_is_a_directory(tmp_path):
    assert_one_line_error(run_cli("info", str(STATE), "--vmcoreinfo", str(tmp_path)), 3, "directory")


@pytest.fixture(scope="module")
def elf_unpacked(tmp_path_factory) -> Path:
    """The ELF sample vmcore decompressed once for this module's damaged copies."""
    import lzma

    (entry,) = ELF_DUMPS
    out = tmp_path_factory.mktemp("elf") / "vmcore.elf"
    with lzma.open(SAMPLES / entry["file"]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


def damaged_copy(src: Path, tmp_path: Path, offset: int, data: bytes) -> Path:
    """A copy of src with data written at offset; src is never opened for writing."""
    out = tmp_path / f"damaged-{src.name}"
    shutil.copy(src, out)
    with open(out, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return out


def _kdump_layout(path: Path) -> tuple[int, int, int]:
    """(page descriptor table offset, number of descriptors, block size) of a kdump file."""
    import struct

    head = path.read_bytes()[:1 << 20]
    block_size, sub_blocks, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
    bitmap_off = (1 + sub_blocks) * block_size
    desc_off = bitmap_off + bitmap_blocks * block_size
    half = bitmap_blocks * block_size // 2
    with open(path, "rb") as f:
        f.seek(bitmap_off + half)
        n = int.from_bytes(f.read(half), "little").bit_count()
    return desc_off, n, block_size


@pytest.mark.parametrize("field,offset,value,words", [pytest.param(*case, id=case[0]) for case in [
    ("e_phentsize 0", 54, (0).to_bytes(2, "little"), ("damaged header", "program header size 0")),
    ("e_machine ARM", 18, (40).to_bytes(2, "little"), ("ARM", "x86_64 and aarch64")),
    ("e_machine RISC-V", 18, (243).to_bytes(2, "little"), ("RISC-V", "x86_64 and aarch64")),
    ("e_machine unknown", 18, (0x1234).to_bytes(2, "little"), ("e_machine 4660",)),
    ("e_phoff", 32, (1 << 60).to_bytes(8, "little"), ("damaged header",)),
    # the first program header's p_offset
    ("p_offset", 64 + 8, (0x7FFF_0000_0000_0000).to_bytes(8, "little"), ("damaged header", "program header 0")),
]])
def test_damaged_elf_header(tmp_path, elf_unpacked, field, offset, value, words):
    r = run_cli("info", str(damaged_copy(elf_unpacked, tmp_path, offset, value)))
    assert_one_line_error(r, 3, *words)
    assert "is truncated" not in r.stderr and "struct" not in r.stderr


@pytest.mark.parametrize("field", ["descriptor offset", "descriptor size", "bitmap blocks", "sub-header blocks",
                                   "block size"])
def test_damaged_kdump_header_is_not_called_truncation(tmp_path, field):
    """A size field beyond any sane bound is damage, not a short copy (once: "5981918 of
    9223300357326272582 bytes present")."""
    src = SAMPLES / "nocopy-fault" / "vmcore.kdump"
    desc_off, n, _bs = _kdump_layout(src)
    offset, value = {
        "descriptor offset": (desc_off + 24 * (n // 2), (9223300357326272582).to_bytes(8, "little")),
        "descriptor size": (desc_off + 24 * 7 + 8, (1 << 30).to_bytes(4, "little")),
        "bitmap blocks": (436, (0x7FFF_FFFF).to_bytes(4, "little")),
        "sub-header blocks": (432, (3000).to_bytes(4, "little")),
        "block size": (428, (3).to_bytes(4, "little")),
    }[field]
    r = run_cli("info", str(damaged_copy(src, tmp_path, offset, value)))
    assert_one_line_error(r, 3, "damaged", "not truncated")


def test_kdump_of_another_architecture(tmp_path):
    machine = b"ppc64le".ljust(65, b"\0")
    r = run_cli("info", str(damaged_copy(VMCORE, tmp_path, 12 + 65 * 4, machine)))
    assert_one_line_error(r, 3, "ppc64le", "x86_64 and aarch64")


def test_truncation_is_still_truncation(tmp_path):
    """A copy cut short inside the page data names the truncation (not damage)."""
    r = run_cli("info", str(truncated(SAMPLES / "nocopy-fault" / "vmcore.kdump", tmp_path, 0.97)))
    assert_one_line_error(r, 3, "truncated")
    assert "damaged" not in r.stderr


def test_samples_untouched_by_the_damage_tests():
    manifest = {d["file"]: d["sha256"] for d in __import__("conftest").DUMPS}
    for rel in ("idle/vmcore.kdump", "nocopy-fault/vmcore.kdump"):
        assert sha256(SAMPLES / rel) == manifest[rel]


@pytest.mark.parametrize("command", [["triage", "--format", "json"], ["triage"], ["report"]])
def test_full_disk_is_the_outputs_fault(command):
    """Writing to a full disk (/dev/full answers every write with ENOSPC) is exit 8 naming
    the output, never exit 7 blaming the dump."""
    r = run_cli(command[0], str(VMCORE), *command[1:], "-o", "/dev/full")
    assert r.returncode == 8, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "No space left on device" in r.stderr
    assert "reading the kernel's data" not in r.stderr


@pytest.mark.parametrize("command", ["triage", "report"])
def test_output_onto_a_debug_file_is_refused(tmp_path, command):
    """A debug file given with --debuginfo is an input like the dump: never written over."""
    debug = tmp_path / "vmlinux.debug"
    debug.write_bytes((SAMPLES / "kernel" / "vmlinux.debug").read_bytes())
    before = sha256(debug)
    r = run_cli(command, str(VMCORE), "--debuginfo", str(debug), "-o", str(debug))
    assert_one_line_error(r, 8, "one of the inputs")
    assert sha256(debug) == before
