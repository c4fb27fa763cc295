"""Logs in any form (dumpkit.logs): compressed, through a FIFO or pipe, with undecodable
bytes, missing or unreadable, hostile; read once, and giving the same faults as the plain
file, through the parser and through the whole verdict."""

from __future__ import annotations

import base64
import bz2
import dataclasses
import gzip
import io
import lzma
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import dumpkit
import dumpkit.logs as logs
from conftest import SAMPLES
from dumpkit.iommu.faults import parse_log
from dumpkit.errors import AccessError, InputError
from dumpkit.logs import LogCache, LogText, detect_compression, grep_lines, read_log

LOG = SAMPLES / "nocopy-fault" / "capture-dmesg.txt"
VMCORE = SAMPLES / "nocopy-fault" / "vmcore.kdump"
NIC = "0000:02:00.0"
MiB = 1 << 20


def records(text: str) -> list[dict]:
    return [dataclasses.asdict(r) for r in parse_log(text, "capture-dmesg.txt")]


def zstd_compress(data: bytes) -> bytes | None:
    try:
        import zstandard
    except ImportError:
        exe = shutil.which("zstd")
        return subprocess.run([exe, "-qc"], input=data, capture_output=True, check=True).stdout if exe else None
    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress, "zstd": zstd_compress}


def compressed(kind: str, data: bytes) -> bytes:
    out = COMPRESSORS[kind](data)
    if out is None:
        pytest.skip(f"no {kind} compressor here")
    return out


def feed_fifo(path, data: bytes) -> threading.Thread:
    """A writer for a FIFO, as a shell's <(cat log) is."""
    def write():
        with open(path, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@pytest.fixture(scope="module")
def plain() -> LogText:
    return read_log(LOG)


# --- compressed logs ---------------------------------------------------------------------------

def test_the_plain_sample_log(plain):
    assert (plain.compression, plain.size, plain.replaced, plain.warnings) == (None, LOG.stat().st_size, 0, ())
    assert plain.text == LOG.read_text() and str(plain) == plain.text and plain.name == LOG.name
    assert any(r["kind"] == "dma-remap" for r in records(plain.text))


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2", "zstd"])
def test_compressed_logs_give_the_same_records_as_plain(tmp_path, plain, kind):
    path = tmp_path / "capture-dmesg.txt"          # the name says nothing: the magic bytes do
    path.write_bytes(compressed(kind, LOG.read_bytes()))
    got = read_log(path)
    assert (got.compression, got.size, got.warnings) == (kind, plain.size, ())
    assert got.text == plain.text and records(got.text) == records(plain.text)


def test_concatenated_gzip_members_and_a_plain_log_named_gz(tmp_path, plain):
    (tmp_path / "two.gz").write_bytes(gzip.compress(LOG.read_bytes()) * 2)
    assert read_log(tmp_path / "two.gz").text == plain.text * 2
    (tmp_path / "plain.gz").write_bytes(LOG.read_bytes())
    assert read_log(tmp_path / "plain.gz").compression is None
    assert detect_compression(b"BZh but text") is None and detect_compression(b"\x1f\x8b\x08") == "gzip"


def test_zstd_through_the_command_when_the_module_is_missing(tmp_path, plain, monkeypatch):
    if shutil.which("zstd") is None:
        pytest.skip("no zstd command here")
    (tmp_path / "log.zst").write_bytes(subprocess.run(["zstd", "-qc"], input=LOG.read_bytes(), capture_output=True,
                                                      check=True).stdout)
    text = long_log()
    data = subprocess.run(["zstd", "-qc"], input=text, capture_output=True, check=True).stdout
    (tmp_path / "cut.zst").write_bytes(data[:len(data) * 3 // 4])
    monkeypatch.setattr(logs, "_zstandard", lambda: None)
    assert read_log(tmp_path / "log.zst").text == plain.text
    cut = read_log(tmp_path / "cut.zst")
    assert len(plain.text) < len(cut.text) < len(text) and text.decode().startswith(cut.text)
    assert "zstd data is damaged or ends early" in cut.warnings[0]


def test_zstd_with_no_decompressor_says_how_to_fix_it(tmp_path, monkeypatch):
    (tmp_path / "log").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    monkeypatch.setattr(logs, "_zstandard", lambda: None)
    monkeypatch.setattr(logs.shutil, "which", lambda name: None)
    with pytest.raises(InputError) as e:
        read_log(tmp_path / "log")
    assert e.value.exit_code == 3 and "zstandard" in str(e.value) and "zstd" in e.value.fix
    assert "\n" not in str(e.value)


def long_log() -> bytes:
    """The sample log, then 1 MiB of lines that do not compress (so that compressed blocks
    are spread over the file)."""
    return LOG.read_bytes() + base64.encodebytes(os.urandom(768 * 1024))


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_a_compressed_log_cut_short_gives_the_text_before_the_cut(tmp_path, plain, kind):
    """A compressed log copied while it was written: the text up to the cut is used, with
    a warning, and the faults in it are found."""
    data = long_log()
    packed = compressed(kind, data)
    (tmp_path / "log").write_bytes(packed[:len(packed) * 3 // 4])
    got = read_log(tmp_path / "log", what="capture log")
    assert len(plain.text) < len(got.text) < len(data) and data.decode().startswith(got.text)
    assert len(got.warnings) == 1 and got.warnings[0].startswith(f"capture log {tmp_path / 'log'}: its {kind} data")
    assert records(got.text) == records(plain.text)


def test_compressed_garbage_is_an_input_error(tmp_path):
    (tmp_path / "log").write_bytes(b"\x1f\x8b" + b"x" * 100)
    with pytest.raises(InputError, match="gzip data is damaged"):
        read_log(tmp_path / "log")


# --- read once: FIFOs, pipes, standard input -----------------------------------------------------------

def test_a_fifo_is_read_once_and_a_cache_gives_the_text_again(tmp_path, plain):
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, gzip.compress(LOG.read_bytes()))
    cache = LogCache()
    first = cache.read(fifo)
    writer.join(10)
    assert first.text == plain.text and first.compression == "gzip"
    assert cache.read(str(fifo)) is first and fifo in cache and len(cache) == 1


def test_dev_fd_of_a_pipe(plain):
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, LOG.read_bytes()), os.close(w)), daemon=True)
    writer.start()
    try:
        got = read_log(f"/dev/fd/{r}")
    finally:
        os.close(r)
    writer.join(10)
    assert got.text == plain.text and records(got.text) == records(plain.text)


def test_standard_input(monkeypatch, plain):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lzma.compress(LOG.read_bytes()))))
    got = read_log("-")
    assert (got.text, got.compression, got.name) == (plain.text, "xz", "standard input")


def test_verdict_with_a_compressed_capture_log_through_a_fifo(tmp_path):
    """dumpkit verdict DUMP --capture-log <(zcat ...): the log is read once, so the faults
    reach the verdict (they used to be lost to a second read of the pipe)."""
    from dumpkit.verdict import judge

    fifo = tmp_path / "capture.log"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, gzip.compress(LOG.read_bytes()))
    v = judge(dumpkit.open(VMCORE), [str(fifo)])
    writer.join(10)
    assert v.capture_logs == [str(fifo)] and v.capture_checks[str(fifo)] == "consistent"
    nic = v.get(NIC)
    assert nic.faults >= 1 and nic.hit_capture_kernel.value is True


def test_verdict_takes_a_log_already_read(plain):
    from dumpkit.verdict import judge

    v = judge(dumpkit.open(VMCORE), [plain])
    assert v.capture_logs == [str(LOG)] and v.get(NIC).faults >= 1


# --- undecodable bytes --------------------------------------------------------------------------

FAULT = b"DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0xffffc000 [fault reason 0x06]"


def fault_of(path) -> dict:
    (rec,) = [r for r in records(read_log(path).text) if r["kind"] == "dma-remap"]
    return rec


def sample_with(tmp_path, old: bytes, new: bytes):
    data = LOG.read_bytes()
    assert data.count(FAULT) == 1
    path = tmp_path / "log"
    path.write_bytes(data.replace(FAULT, FAULT.replace(old, new)))
    return path


def test_a_bad_byte_elsewhere_on_the_fault_line_costs_only_that_byte(tmp_path, plain):
    (want,) = [r for r in records(plain.text) if r["kind"] == "dma-remap"]
    for old, new in [(b"NO_PASID] ", b"NO_PASID]\xff "), (b"DMAR: [", b"DMAR:\xc3 ["), (b"0x06]", b"0x06]\x80")]:
        path = sample_with(tmp_path, old, new)
        assert read_log(path).replaced == 1
        got = fault_of(path)
        assert {k: got[k] for k in ("requester", "address", "access", "reason_code")} == \
               {k: want[k] for k in ("requester", "address", "access", "reason_code")}


def test_a_bad_byte_inside_the_requester_never_drops_the_fault(tmp_path):
    inserted = fault_of(sample_with(tmp_path, b"[02:00.0]", b"[02:00\xfe.0]"))
    assert inserted["requester"] == "02:00.0" and inserted["detail"]["requester_recovered_from"] == "02:00\ufffd.0"
    replaced = fault_of(sample_with(tmp_path, b"[02:00.0]", b"[02:0\xb0.0]"))
    assert replaced["requester"] is None and replaced["detail"]["requester_unparsed"] == "02:0\ufffd.0"
    assert replaced["address"] == 0xFFFFC000 and replaced["detail"]["damaged"] is True
    assert replaced["detail"]["table_dump"]      # the table dump lines after it still attach to it


def test_decoding_counts_only_bytes_it_replaced(tmp_path):
    (tmp_path / "log").write_bytes("already \ufffd here\n".encode() + b"bad \xff\xfe\n")
    got = read_log(tmp_path / "log")
    assert got.replaced == 2 and got.text == "already \ufffd here\nbad \ufffd\ufffd\n"


# --- what cannot be read -------------------------------------------------------------------------

def test_missing_directory_and_unreadable_logs_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError) as e:
        read_log(tmp_path / "nope", what="capture log")
    assert e.value.exit_code == 3 and str(e.value) == f"capture log {tmp_path / 'nope'}: no such file; check the path"
    with pytest.raises(InputError, match="is a directory") as e:
        read_log(tmp_path)
    assert e.value.exit_code == 3
    (tmp_path / "log").write_bytes(LOG.read_bytes())
    real_open = open

    def denying_open(path, *a, **kw):
        if os.fspath(path) == str(tmp_path / "log"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(logs, "open", denying_open, raising=False)
    with pytest.raises(AccessError) as e:
        read_log(tmp_path / "log")
    assert e.value.exit_code == 5 and "permission denied" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path):
    (tmp_path / "log").write_bytes(b"x")
    (tmp_path / "log").chmod(0)
    with pytest.raises(AccessError):
        read_log(tmp_path / "log")


def test_the_size_read_is_bounded(tmp_path):
    (tmp_path / "log").write_bytes(LOG.read_bytes())
    with pytest.raises(InputError, match="larger than 1 KiB;") as e:
        read_log(tmp_path / "log", max_bytes=1024)
    assert e.value.exit_code == 3 and "tail -c" in e.value.fix
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(bytes(64 * MiB), 9))     # 64 KiB that inflate to 64 MiB
    with pytest.raises(InputError, match="larger than 1 MiB after gzip decompression"):
        read_log(tmp_path / "bomb.gz", max_bytes=MiB)
    assert logs.MAX_LOG_BYTES == 1 << 30


# --- hostile content, read from files -------------------------------------------------------------

def test_a_sparse_hole_in_a_capture_log(tmp_path, plain):
    """A log with a 64 MiB hole (NUL bytes when read) between two copies of the sample:
    both copies' faults are found, the second starting on the line that holds the hole."""
    path = tmp_path / "log"
    with open(path, "wb") as f:
        f.write(LOG.read_bytes())
        f.seek(64 * MiB, os.SEEK_CUR)
        f.write(LOG.read_bytes())
    t = time.perf_counter()
    text = read_log(path).text
    got = [r["kind"] for r in records(text)]
    assert time.perf_counter() - t < 10
    assert got == [r["kind"] for r in records(plain.text)] * 2


def test_random_bytes_with_a_fault_at_each_end(tmp_path):
    line = b"[    1.0] " + FAULT + b" PTE Read access is not set\n"
    (tmp_path / "log").write_bytes(line + os.urandom(16 * MiB) + b"\n" + line)
    t = time.perf_counter()
    got = read_log(tmp_path / "log")
    recs = [r for r in records(got.text) if r["kind"] == "dma-remap" and r["requester"] == "02:00.0"]
    assert time.perf_counter() - t < 10 and len(recs) >= 2 and got.replaced > 0


def test_grep_lines_cuts_lines_as_splitlines():
    text = "a kdump: 1\r\nb\rc kdump: 2\x0bd kdump: 3\n\nkdump: 4"
    assert list(grep_lines(text, "kdump: ")) == [x for x in text.splitlines() if "kdump: " in x]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_wide_character_log_gives_the_same_faults_and_says_so(tmp_path, encoding):
    """A log saved as UTF-16/32 (a Windows editor, PowerShell's >): decoded as such, with a
    warning naming the encoding, and the same fault records as the UTF-8 file."""
    wide = tmp_path / "capture-dmesg.txt"
    wide.write_bytes(LOG.read_text().encode(encoding))
    got = read_log(wide)
    assert any("UTF-" in w and "decoded as such" in w for w in got.warnings), got.warnings
    strip = lambda rs: [{k: v for k, v in r.items() if k != "source"} for r in rs]   # noqa: E731
    assert strip(records(got.text)) == strip(records(LOG.read_text()))


def test_binary_data_as_a_log_is_said(tmp_path):
    """A file that is no text (here: the sample's own kdump file) read as a log: its few
    records, if any, are kept, and a warning says the file is binary."""
    got = read_log(VMCORE)
    assert any("is not text" in w for w in got.warnings), got.warnings
    assert not read_log(LOG).warnings


def test_faults_command_reports_warnings_and_a_closed_stdin(tmp_path):
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(gzip.compress(LOG.read_bytes())[:4000])
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "faults", str(cut)], capture_output=True, text=True)
    assert r.returncode == 0 and "ends early" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", "faults", "-"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, close_fds=True)
    assert r.returncode == 0 and "0 IOMMU fault records" in r.stdout, (r.returncode, r.stderr)
    r = subprocess.run(f"{sys.executable} -m dumpkit.cli faults - <&-", shell=True, capture_output=True, text=True)
    assert r.returncode == 3 and "standard input is closed" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_capture_log_that_ends_early_leaves_hit_unknown_not_no(tmp_path):
    """A gzip capture log cut in half: its records up to the cut are used, a warning says
    where it ends, and a device that kept doing DMA with no fault in the part read is
    "hit: unknown", never "no": its faults may be in the part that is gone."""
    nocopy = SAMPLES / "nocopy-fault"
    cut = tmp_path / "capture-dmesg.txt.gz"
    data = gzip.compress((nocopy / "capture-dmesg.txt").read_bytes())
    cut.write_bytes(data[:len(data) // 4])
    from dumpkit.verdict import judge

    v = judge(dumpkit.open(nocopy / "vmcore.kdump"), [cut])
    assert any("ends early" in w for w in v.warnings), v.warnings
    nic = v.get(NIC)
    assert nic.did_dma_after_crash.value is True
    assert nic.hit_capture_kernel.value is None and "ends early" in str(nic.hit_capture_kernel)
