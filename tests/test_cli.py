"""The command line's error policy on the real sample dumps: global options anywhere, exit
codes by what failed (inputs 3, permissions 5, output 8, Ctrl-C 130, a closed pipe 0),
triage that keeps finished rows, and `dumpkit faults` without a dump. Every failure is one
stderr line and never a traceback; inputs are never written."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLES

import dumpkit
from dumpkit import cli
from dumpkit.errors import EXIT_CODES

VMCORE = SAMPLES / "idle" / "vmcore.kdump"
FAULT = SAMPLES / "nocopy-fault" / "vmcore.kdump"
FAULT_LOG = SAMPLES / "nocopy-fault" / "capture-dmesg.txt"
STATE = SAMPLES / "copied-traffic" / "capture-state.kdump"
STATE_VMCOREINFO = SAMPLES / "copied-traffic" / "capture-vmcoreinfo.txt"
VMLINUX = SAMPLES / "kernel" / "vmlinux.debug"
DUMPKIT = [sys.executable, "-m", "dumpkit.cli"]
NO_NETWORK = {"DEBUGINFOD_URLS": ""}


def run_cli(*args, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", "stdout" not in kw)
    return subprocess.run([*DUMPKIT, *map(str, args)], text=True, timeout=timeout,
                          env={**os.environ, **NO_NETWORK, **(env or {})}, **kw)


def one_line(stderr: str, *words: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dumpkit: error: "), stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def failed(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert code in EXIT_CODES
    return one_line(r.stderr, *words)


def main_err(capsys, *args) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- global options ---------------------------------------------------------------------

def test_global_options_after_the_command():
    r = run_cli("pci", VMCORE, "--debuginfo", VMLINUX)
    assert r.returncode == 0, r.stderr
    assert "0000:00:00.0" in r.stdout and r.stderr == ""


def test_debuginfo_repeatable_before_and_after(capsys, monkeypatch):
    """Every --debuginfo reaches dumpkit.open as one list, in order; --debuginfod only when set."""
    calls = []
    real_open = dumpkit.open

    def spy(source, **kw):
        calls.append(kw)
        return real_open(source, **kw)

    monkeypatch.setattr(dumpkit, "open", spy)
    monkeypatch.delenv("DUMPKIT_DEBUGINFOD", raising=False)
    code = cli.main(["--debuginfo", str(VMLINUX), "info", str(VMCORE), "--debuginfo", str(VMLINUX.parent)])
    assert code == 0, capsys.readouterr().err
    assert calls[-1] == {"debuginfo": [str(VMLINUX), str(VMLINUX.parent)]}
    assert "explicit" in capsys.readouterr().out
    monkeypatch.setenv("DEBUGINFOD_URLS", "")
    assert cli.main(["pci", str(VMCORE), "--debuginfod"]) == 0
    assert calls[-1] == {"debuginfo": None, "debuginfod": True}
    monkeypatch.setenv("DUMPKIT_DEBUGINFOD", "1")
    assert cli.main(["info", str(VMCORE), "--json"]) == 0
    assert calls[-1] == {"debuginfo": None, "debuginfod": True}
    capsys.readouterr()


def test_vmcoreinfo_after_the_command():
    r = run_cli("info", STATE, "--vmcoreinfo", STATE_VMCOREINFO, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kdump"]["capture_kernel"] is True


def test_vmcoreinfo_where_it_does_not_apply():
    r = run_cli("compare", VMCORE, FAULT, "--vmcoreinfo", STATE_VMCOREINFO)
    assert r.returncode == 2 and "--vmcoreinfo applies to" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--jobs", "-2"], ["--jobs", "two"], ["--timeout", "0"],
                                  ["--timeout", "-5"], ["--timeout", "nan"], ["--timeout", "inf"]])
def test_jobs_and_timeout_must_be_positive(capsys, args):
    with pytest.raises(SystemExit) as e:
        cli.main(["triage", str(VMCORE), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "Traceback" not in err


def test_every_option_has_help():
    parser = cli.build_parser()
    parsers = [("dumpkit", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert action.help
            parsers += list(action.choices.items())
    for name, p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


def test_help_documents_every_exit_code():
    r = run_cli("--help")
    assert r.returncode == 0
    for code, text in EXIT_CODES.items():
        assert f"{code:<3} {text}" in r.stdout
    assert {8, 130} <= set(EXIT_CODES)
    assert "faults" in r.stdout


# --- closed pipe, Ctrl-C, full disk -----------------------------------------------------------

@pytest.mark.parametrize("args", [["pci", VMCORE, "--json"], ["triage", VMCORE], ["faults", FAULT_LOG, "--csv"]],
                         ids=["pci", "triage", "faults"])
def test_closed_pipe_ends_quietly(args):
    """The reader is gone before dumpkit writes (deterministic EPIPE): exit 0, stderr empty."""
    proc = subprocess.Popen([*DUMPKIT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **NO_NETWORK})
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b"", err.decode()


def test_head_in_a_shell_pipeline():
    exe = shutil.which("dumpkit") or " ".join(DUMPKIT)
    r = subprocess.run(["bash", "-c", f"{exe} pci {VMCORE} --json | head -c 100 >/dev/null; "
                                      "echo ${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "0" and r.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("args", [["pci", VMCORE], ["pci", VMCORE, "--json"], ["faults", FAULT_LOG]],
                         ids=["pci", "pci-json", "faults"])
def test_full_disk_is_an_output_error(buffered, args):
    """Exit 8 and one line whether Python buffers stdout or not: a buffered stdout keeps the
    bytes that could not be written, and the interpreter's own flush at exit failed again
    (exit 120, "Exception ignored ...") until dumpkit dropped them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(NO_NETWORK, **({} if buffered else {"PYTHONUNBUFFERED": "1"}))
    with open("/dev/full", "w") as full:
        r = subprocess.run([*DUMPKIT, *map(str, args)], stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=120, env=env)
    failed(r, 8, "standard output", "No space left")
    assert "dump may be" not in r.stderr and "Exception ignored" not in r.stderr


def _as_at_a_terminal() -> None:
    """In the child: SIGINT as a shell's foreground job has it. A non-interactive shell
    starts background jobs with SIGINT ignored (CI was once started so), and a Python
    started with it ignored keeps it ignored, rightly: Ctrl-C then never reaches it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_is_one_line_and_130(tmp_path):
    """dumpkit blocked reading a log from a pipe nobody writes to, then Ctrl-C."""
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    proc = subprocess.Popen([*DUMPKIT, "faults", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_as_at_a_terminal)
    deadline = time.monotonic() + 30
    while True:         # until dumpkit has the FIFO open for reading
        try:
            # keep the write end open: closing it would give dumpkit an end of file to finish on
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
    try:
        code, err = _interrupt(proc)
    finally:
        os.close(writer)
    assert code == 130
    one_line(err, "interrupted")


def _read_rows(out: Path, fmt: str) -> list[dict]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(out.read_text())))
    if fmt == "json":
        return json.loads(out.read_text())      # still a complete JSON array
    import pandas as pd

    return pd.read_parquet(out).to_dict("records")


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_ctrl_c_keeps_the_finished_triage_rows(tmp_path, fmt):
    out = tmp_path / f"t.{fmt}"
    first_row = {"csv": 2, "json": 2, "parquet": 1}[fmt]       # lines on disk once a row is there
    dumps = [SAMPLES / sc / "vmcore.kdump" for sc in ("idle", "nocopy-fault", "copied-traffic", "patched-nocopy",
                                                       "patched-copied")]
    proc = subprocess.Popen([*DUMPKIT, "triage", *map(str, dumps), "--format", fmt, "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal)
    # rows stream to a file beside the output (renamed over it at the end)
    streamed = (out.with_name(out.name + ".partial.jsonl") if fmt == "parquet"
                else out.with_name(f".{out.name}.{proc.pid}.tmp"))
    deadline = time.monotonic() + 60
    while not (streamed.exists() and len(streamed.read_text().splitlines()) >= first_row):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    code, err = _interrupt(proc)
    assert code == 130
    line = one_line(err, "interrupted after", str(out))
    rows = _read_rows(out, fmt)
    assert 1 <= len(rows) < len(dumps) and f"after {len(rows)} of {len(dumps)}" in line
    assert all(r["status"] == "ok" and r["kind"] == "crash" for r in rows)
    assert rows[0]["path"] == str(dumps[0])
    assert not out.with_name(out.name + ".partial.jsonl").exists()


# --- inputs: missing is 3 before any analysis, unreadable is 5 ----------------------------------

@pytest.mark.parametrize("args,word", [
    (["info", "/nonexistent/vmcore"], "no such file"),
    (["verdict", FAULT, "--capture-log", "/nonexistent/capture-dmesg.txt"], "capture log"),
    (["verdict", FAULT, "--capture-dump", "/nonexistent/capture-state.kdump"], "no such file"),
    (["dmar", FAULT, "--log", "/nonexistent/dmesg.txt"], "log"),
    (["info", STATE, "--vmcoreinfo", "/nonexistent/vmcoreinfo"], "vmcoreinfo"),
    (["compare", FAULT, "/nonexistent/after.kdump"], "after.kdump"),
    (["triage", VMCORE, "/nonexistent/dir"], "no such file"),
    (["faults", FAULT_LOG, "/nonexistent/dmesg.txt"], "log"),
    (["report", FAULT, "--capture-log", "/nonexistent/capture-dmesg.txt", "-o", "/tmp/never.html"], "capture log"),
], ids=["dump", "capture-log", "capture-dump", "log", "vmcoreinfo", "compare", "triage", "faults", "report"])
def test_missing_inputs_exit_3_before_any_analysis(capsys, args, word):
    start = time.monotonic()
    code, err = main_err(capsys, *args)
    assert code == 3 and time.monotonic() - start < 5
    one_line(err, word, "/nonexistent/")


def test_no_dumps_in_a_directory(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here\n")
    code, err = main_err(capsys, "triage", tmp_path)
    assert code == 3
    one_line(err, "no dumps found", str(tmp_path))


def test_unreadable_directory_is_an_access_error(capsys, monkeypatch, tmp_path):
    """As root every directory is readable, so the denial is simulated where it is listed."""
    locked = tmp_path / "crash" / "202611231200"
    locked.mkdir(parents=True)
    shutil.copy(VMCORE, locked / "vmcore")
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        code, err = main_err(capsys, "triage", tmp_path / "crash", "-o", tmp_path / "t.csv")
    finally:
        locked.chmod(0o755)
    assert code == 5
    one_line(err, str(locked), "permission denied")
    assert not (tmp_path / "t.csv").exists()


# --- output: its own exit code, never blamed on the dump --------------------------------------

@pytest.mark.parametrize("command", ["triage", "report"])
def test_output_in_a_missing_directory(tmp_path, command):
    start = time.monotonic()
    r = run_cli(command, VMCORE, "-o", tmp_path / "missing-dir" / "out")
    line = failed(r, 8, "missing-dir", "does not exist")
    assert "dump may be" not in line and time.monotonic() - start < 10


def test_output_that_is_a_directory_or_an_input(tmp_path):
    failed(run_cli("triage", VMCORE, "-o", tmp_path), 8, "is a directory")
    copy = tmp_path / "vmcore"
    shutil.copy(VMCORE, copy)
    before = sha256(copy)
    failed(run_cli("triage", copy, "-o", copy), 8, "one of the inputs")
    assert sha256(copy) == before


# --- triage -----------------------------------------------------------------------------------

def test_triage_marks_capture_state_dumps(tmp_path):
    out = tmp_path / "t.jsonl"
    r = run_cli("triage", SAMPLES / "copied-traffic", "--jobs", "2", "--format", "jsonl", "-o", out)
    assert r.returncode == 0, r.stderr
    rows = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"capture-state.kdump", "vmcore.kdump"}
    cap, crash = rows["capture-state.kdump"], rows["vmcore.kdump"]
    assert cap["kind"] == "capture-state dump" and cap["capture_kernel"] is True
    assert cap["crash_dump"] == str(SAMPLES / "copied-traffic" / "vmcore.kdump")
    assert cap["endpoints"] is None and cap["dma_after_crash"] is None
    assert crash["kind"] == "crash" and crash["endpoints"] > 0 and crash["dma_after_crash"] >= 1


def test_triage_function_keeps_its_signature():
    from dumpkit.triage import triage

    rows = triage([VMCORE], 1, 120, [str(VMLINUX)], False)
    assert [(r["status"], r["kind"]) for r in rows] == [("ok", "crash")]


def test_triage_bad_dump_is_one_row_and_one_line(tmp_path):
    fifo = tmp_path / "vmcore.fifo"
    os.mkfifo(fifo)
    r = run_cli("triage", fifo, "--format", "json", "--timeout", "60")
    assert r.returncode == 1
    (row,) = json.loads(r.stdout)
    assert row["status"] == "error" and "FIFO" in row["error"]
    assert r.stderr.strip().splitlines() == [f"dumpkit: {fifo}: {row['error']}"]


# --- faults without a dump --------------------------------------------------------------------

def test_faults_table_json_csv():
    r = run_cli("faults", FAULT_LOG)
    assert r.returncode == 0, r.stderr
    assert "dma-remap dmar0 from 02:00.0 read 0xffffc000" in r.stdout
    records = json.loads(run_cli("faults", FAULT_LOG, "--json").stdout)
    dma = [x for x in records if x["kind"] == "dma-remap"]
    assert dma and dma[0]["address"] == 0xFFFFC000 and dma[0]["source"] == str(FAULT_LOG)
    rows = list(csv.DictReader(io.StringIO(run_cli("faults", FAULT_LOG, "--csv").stdout)))
    assert len(rows) == len(records) and any(x["address"] == "0xffffc000" for x in rows)
    r = run_cli("faults", "-", input=FAULT_LOG.read_text())      # dmesg | dumpkit faults -
    assert r.returncode == 0 and "dma-remap dmar0 from 02:00.0" in r.stdout and "<standard input>" in r.stdout


def test_faults_in_binary_garbage(tmp_path):
    (tmp_path / "dmesg").write_bytes(os.urandom(1 << 14) + b"\nDMAR: [DMA Write NO_PASID] Request device "
                                     b"[03:00.0] fault addr 0x1000 [fault reason 0x05] PTE Write access is not set\n")
    r = run_cli("faults", tmp_path / "dmesg", "--json")
    # the record in it is kept, and the reader is told the file is mostly not text
    assert r.returncode == 0 and r.stderr.count("\n") == 1 and "is not text" in r.stderr, r.stderr
    assert [x["requester"] for x in json.loads(r.stdout) if x["kind"] == "dma-remap"] == ["03:00.0"]


def test_faults_in_a_compressed_log(tmp_path):
    import gzip

    log = tmp_path / "dmesg.gz"
    log.write_bytes(gzip.compress(FAULT_LOG.read_bytes()))
    r = run_cli("faults", log)
    try:
        import dumpkit.logs  # noqa: F401  (reads compressed logs when present)
    except ImportError:
        failed(r, 3, "gzip-compressed", "decompress")
    else:
        assert r.returncode == 0 and "dma-remap" in r.stdout


# --- info lists modules -----------------------------------------------------------------------

def test_info_lists_modules():
    r = run_cli("info", VMCORE)
    assert r.returncode == 0, r.stderr
    data = json.loads(run_cli("info", VMCORE, "--json").stdout)
    if hasattr(dumpkit.Dump, "modules"):
        assert any(line.startswith("modules:") for line in r.stdout.splitlines())
        assert isinstance(data["modules"], list)
    else:
        assert "modules" not in data


def test_iommu_command_and_its_dmar_alias_are_vendor_neutral():
    import subprocess
    import sys

    from conftest import SAMPLES

    runs = [subprocess.run([sys.executable, "-m", "dumpkit.cli", cmd, str(SAMPLES / "nocopy-fault" / "vmcore.kdump"),
                            "--json"], capture_output=True, text=True, timeout=120) for cmd in ("iommu", "dmar")]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    import json

    a, b = (json.loads(r.stdout) for r in runs)
    assert a == b and a["vendor"] == "intel-vtd" and a["entries"] and a["correlations"]


def test_capture_log_of_another_crash_is_refused_unless_forced():
    import subprocess
    import sys

    from conftest import SAMPLES

    args = [sys.executable, "-m", "dumpkit.cli", "verdict", str(SAMPLES / "nocopy-fault" / "vmcore.kdump"),
            "--capture-log", str(SAMPLES / "copied-traffic" / "capture-dmesg.txt")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "another crash" in r.stderr and "--force" in r.stderr
    r = subprocess.run(args + ["--force", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    import json

    v = json.loads(r.stdout)
    assert any("does not match this crash" in w for w in v["warnings"])


# --- progress bars -------------------------------------------------------------------------

def _stderr_on_a_terminal(args: list[str], env: dict | None = None) -> tuple[int, str, str]:
    """Run dumpkit with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a new pty is 0 columns wide
    proc = subprocess.Popen([sys.executable, "-m", "dumpkit.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=slave, text=True, env={**os.environ, **(env or {})})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:          # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read()
    proc.wait(timeout=300)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_compare_shows_a_progress_bar_on_a_terminal_only():
    before, after = SAMPLES / "copied-traffic" / "vmcore.kdump", SAMPLES / "patched-copied" / "vmcore.kdump"
    # the bar waits a second by default; the samples are quick, so no wait here
    code, out, tty = _stderr_on_a_terminal(["compare", before, after], {"DUMPKIT_PROGRESS_DELAY": "0"})
    assert code == 0 and "endpoints changed" in out
    assert re.search(r"compare: [1-4]/4 .*(opening|judging)", tty), tty
    assert "\r" in tty and "compare:" not in out               # on the terminal, never in the output
    r = run_cli("compare", before, after)
    assert r.returncode == 0 and "compare:" not in r.stderr and "\r" not in r.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_waits_a_second_and_clears(monkeypatch):
    """Stages of work under a second draw nothing; after a second the next stage draws the
    bar; the bar is cleared at the end. Not a terminal: nothing at all."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with cli._stages("verdict", 2) as stage:
        stage("opening vmcore")
        assert term.getvalue() == ""
        time.sleep(1.1)
        stage("judging vmcore")
        drawn = term.getvalue()
        assert "verdict: 1/2" in drawn and "judging vmcore" in drawn
    assert term.getvalue().endswith("\r") or "\x1b[A" in term.getvalue()[len(drawn):] \
        or term.getvalue()[len(drawn):].strip() == ""
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    with cli._stages("verdict", 2) as stage:
        time.sleep(1.1)
        stage("judging vmcore")
    assert plain.getvalue() == ""


def test_verdict_text_imports_nothing_heavy():
    """verdict (text or JSON) and pci need neither pandas, matplotlib, pyarrow nor dask;
    tqdm only on a terminal."""
    code = ("import sys\nfrom dumpkit import cli\n"
            "sys.argv = ['dumpkit', *sys.argv[1:]]\n"
            "assert cli.main(sys.argv[1:]) == 0\n"
            "heavy = ('pandas', 'matplotlib', 'pyarrow', 'dask', 'distributed', 'tqdm', 'papermill')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), file=sys.stderr)\n")
    for args in (["verdict", SAMPLES / "nocopy-fault" / "vmcore.kdump"],
                 ["verdict", "--json", SAMPLES / "nocopy-fault" / "vmcore.kdump"],
                 ["pci", "-v", SAMPLES / "idle" / "vmcore.kdump"]):
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == "[]", (args, r.stderr)


# --- one --format option, the old flags its shorthands ---------------------------------------

def main_out(capsys, *args) -> tuple[int, str]:
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().out


def test_format_and_its_shorthands_print_the_same(capsys):
    for args, shorthand in ((["pci", VMCORE], "--json"), (["pci", VMCORE], "--csv"),
                            (["faults", FAULT_LOG], "--csv"), (["faults", FAULT_LOG], "--table"),
                            (["info", VMCORE], "--json")):
        fmt = {"--table": "text"}.get(shorthand, shorthand[2:])
        assert main_out(capsys, *args, shorthand) == main_out(capsys, *args, "--format", fmt), (args, shorthand)
    assert main_out(capsys, "pci", VMCORE) == main_out(capsys, "pci", VMCORE, "--format", "text")


@pytest.mark.parametrize("args", [["pci", VMCORE, "--format", "json", "--csv"],
                                  ["faults", FAULT_LOG, "--json", "--format", "csv"],
                                  ["pci", VMCORE, "--tree", "--format", "csv"]])
def test_one_format_at_a_time(capsys, args):
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in args])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_format_choices_follow_what_a_command_prints():
    from dumpkit.cli import compare, faults, info, iommu, pci, verdict
    from dumpkit.cli.output import TRIAGE_FORMATS

    assert info.InfoRecords.formats() == ("text", "json")
    for module in (pci, compare, faults):
        assert module.__dict__[next(n for n in dir(module) if n.endswith("Records"))].formats() == \
            ("text", "json", "csv")
    assert iommu.IommuRecords.formats() == verdict.VerdictRecords.formats() == ("text", "json", "csv")
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fmt = next(a for a in sub.choices["triage"]._actions if a.dest == "format" and a.choices)
    assert tuple(fmt.choices) == TRIAGE_FORMATS


def test_iommu_csv_one_row_per_record(capsys):
    code, out = main_out(capsys, "iommu", FAULT, "--csv")
    assert code == 0
    data = json.loads(main_out(capsys, "iommu", FAULT, "--format", "json")[1])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["bdf"] for r in rows] == [e["bdf"] for e in data["entries"]]
    assert {r["translation"] for r in rows} == {e["translation"] for e in data["entries"]}
    code, out = main_out(capsys, "dmar", FAULT, "--format", "csv", "--records", "faults")
    faults = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(faults) == len(data["faults"])
    assert any(r["device"] and r["kind"] == "dma-remap" for r in faults)


def test_iommu_records_needs_csv(capsys):
    code, err = main_err(capsys, "iommu", FAULT, "--records", "units")
    assert code == 2
    one_line(err, "--records applies to --csv")


def test_verdict_csv_one_row_per_endpoint(capsys):
    code, out = main_out(capsys, "verdict", FAULT, "--csv")
    assert code == 0
    data = json.loads(main_out(capsys, "verdict", FAULT, "--json")[1])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["bdf"] for r in rows] == [e["bdf"] for e in data["endpoints"]]
    for row, e in zip(rows, data["endpoints"], strict=True):
        for claim in ("could_dma", "did_dma_after_crash", "hit_capture_kernel", "stopped_by_reset"):
            assert row[f"{claim}_word"] == e[f"{claim}_word"] and row[f"{claim}_basis"] == (e[f"{claim}_basis"] or "")
