"""The dumpkit command line.

Error policy: every failure a user can cause or meet is one line on stderr, ``dumpkit:
error: WHAT; FIX``, and an exit code from :data:`dumpkit.errors.EXIT_CODES` chosen by what
failed: the command line (2), an input (3, checked before any analysis), debug info (4),
permissions (5), a QMP socket (6), the kernel's data in the dump (7), the output (8), or
Ctrl-C (130). A closed pipe (``| head``) ends quietly with 0. Inputs are only ever read.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import stat
import sys
from pathlib import Path

from dumpkit.errors import (EXIT_CODES, AccessError, AnalysisError, DumpkitError, InputError, Interrupted,
                            OutputError, UsageError, file_error)

__all__ = ["build_parser", "main"]

EPILOG = """\
sources:
  PATH          a vmcore, ELF or kdump-compressed (makedumpfile, QEMU)
  live          this machine's kernel through /proc/kcore (needs root)
  qmp:SOCKET    a running QEMU guest (-qmp unix:SOCKET,server=on,wait=off -device vmcoreinfo)

global options (--debuginfo, --debuginfod, --vmcoreinfo) go before or after COMMAND.

examples:
  dumpkit info sample-dumps/nocopy-fault/vmcore.kdump
  dumpkit pci --tree sample-dumps/copied-traffic/vmcore.kdump
  dumpkit pci -v -s 02:00.0 sample-dumps/copied-traffic/vmcore.kdump
  dumpkit pci --csv sample-dumps/idle/vmcore.kdump > idle.csv
  dumpkit iommu sample-dumps/nocopy-fault/vmcore.kdump --log sample-dumps/nocopy-fault/capture-dmesg.txt
  dumpkit verdict sample-dumps/nocopy-fault/vmcore.kdump
  dumpkit compare sample-dumps/nocopy-fault/vmcore.kdump sample-dumps/patched-nocopy/vmcore.kdump [--json]
  dumpkit triage sample-dumps --jobs 2 --format csv -o triage.csv
  dumpkit triage /var/crash --debuginfo /srv/debug -o fleet/ --format parquet   # resumable dataset
  dumpkit report sample-dumps/nocopy-fault/vmcore.kdump -o report.html
  dumpkit faults vmcore-dmesg.txt --csv          # IOMMU faults of a log, no dump needed
  dumpkit info /var/crash/127.0.0.1-2026-11-23/vmcore --debuginfo /usr/lib/debug --debuginfo e1000e.ko.debug
  sudo dumpkit pci live

exit codes:
""" + "\n".join(f"  {code:<3} {text}" for code, text in EXIT_CODES.items())

# commands whose dump --vmcoreinfo replaces the VMCOREINFO of (verdict: its --capture-dump)
VMCOREINFO_COMMANDS = ("info", "pci", "iommu", "dmar", "verdict")
# commands that open dumps, so take --debuginfo and --debuginfod
DEBUGINFO_COMMANDS = ("info", "pci", "iommu", "dmar", "verdict", "compare", "triage", "report")
GLOBAL_OPTIONS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")

# each command's --help ends with its own examples (the overview's are in EPILOG)
EXAMPLES = {
    "info": ["dumpkit info sample-dumps/nocopy-fault/vmcore.kdump",
             "dumpkit info DUMP --json --sha256",
             "dumpkit info /var/crash/127.0.0.1-2026-11-23/vmcore --debuginfo /usr/lib/debug"],
    "pci": ["dumpkit pci sample-dumps/copied-traffic/vmcore.kdump            # the tree (lspci -tv shape)",
            "dumpkit pci DUMP -nn -k -s 02:00.0      # lspci -nnk -s 02:00.0: ids, subsystem, driver",
            "dumpkit pci DUMP -v -s 2:0.0            # the lspci -vv-like block of one function",
            "dumpkit pci DUMP -d 8086: -t            # the tree down to Intel's functions",
            "dumpkit pci DUMP --csv -d ::0200 > nics.csv"],
    "iommu": ["dumpkit iommu sample-dumps/nocopy-fault/vmcore.kdump",
              "dumpkit iommu DUMP --log vmcore-dmesg.txt --json",
              "dumpkit dmar DUMP --no-auto-log"],
    "verdict": ["dumpkit verdict sample-dumps/nocopy-fault/vmcore.kdump",
                "dumpkit verdict DUMP --capture-log dmesg.202611231200 --json",
                "dumpkit verdict DUMP --capture-dump capture-state.kdump --vmcoreinfo capture-vmcoreinfo.txt"],
    "compare": ["dumpkit compare sample-dumps/nocopy-fault/vmcore.kdump sample-dumps/patched-nocopy/vmcore.kdump",
                "dumpkit compare BEFORE AFTER --json",
                "dumpkit compare BEFORE AFTER --csv > changes.csv"],
    "triage": ["dumpkit triage sample-dumps --jobs 2 --format csv -o triage.csv",
               "dumpkit triage /var/crash --debuginfo /srv/debug -o fleet/ --format parquet   # resumable dataset",
               "dumpkit triage DUMPS... --scheduler tcp://10.0.0.5:8786 --format jsonl"],
    "report": ["dumpkit report sample-dumps/nocopy-fault/vmcore.kdump -o report.html",
               "dumpkit report BEFORE --after AFTER -o before-after.html",
               "dumpkit report DUMP -o report.html --show-code      # with the notebook's code cells"],
    "notebooks": ["dumpkit notebooks ~/dumpkit-notebooks",
                  "dumpkit notebooks ~/dumpkit-notebooks --force   # replace the copies already there"],
    "faults": ["dumpkit faults vmcore-dmesg.txt",
               "dumpkit faults capture-dmesg.txt.gz --csv",
               "journalctl -k -b -1 | dumpkit faults - --json"],
}


# --- argument types and global options --------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _memory_size(text: str) -> int:
    """A memory size such as 4GiB (parsed by the fleet engine, imported only when given:
    it pulls in pyarrow)."""
    from dumpkit.fleet.engine import parse_memory

    return parse_memory(text)


def _add_global_options(parser: argparse.ArgumentParser, after_command: bool,
                        which: tuple[str, ...] = GLOBAL_OPTIONS) -> None:
    """--debuginfo, --debuginfod and --vmcoreinfo (those in ``which``), before COMMAND
    (top-level parser, all three) and after it (each subparser, those the command uses,
    into separate destinations merged by :func:`_merge_globals`)."""
    if not which:
        return
    prefix, default = ("sub_", argparse.SUPPRESS) if after_command else ("", None)
    group = parser.add_argument_group("global options (before or after COMMAND)")
    if "--debuginfo" not in which:
        return
    group.add_argument("--debuginfo", action="append", metavar="PATH", dest=prefix + "debuginfo",
                       default=default,
                       help="debug info of the dumped kernel and its modules: a vmlinux, module .ko/.ko.debug "
                            "files, or a directory such as /usr/lib/debug or an unpacked -dbg package; "
                            "repeatable, matched by build-id. Default: drgn's standard search, then the "
                            "sample-dumps manifest")
    group.add_argument("--debuginfod", action="store_true", dest=prefix + "debuginfod",
                       default=argparse.SUPPRESS if after_command else False,
                       help="also ask debuginfod servers (network) for missing debug info; "
                            "also on with DUMPKIT_DEBUGINFOD=1")
    if "--vmcoreinfo" not in which:
        return
    group.add_argument("--vmcoreinfo", metavar="FILE", dest=prefix + "vmcoreinfo", default=default,
                       help="VMCOREINFO text to use instead of the dump's (a QEMU dump of a capture "
                            "kernel; for verdict it applies to --capture-dump)")


def _merge_globals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    after = getattr(args, "sub_debuginfo", None) or []
    args.debuginfo = (args.debuginfo or []) + after or None
    if getattr(args, "sub_vmcoreinfo", None) is not None:
        args.vmcoreinfo = args.sub_vmcoreinfo
    env = os.environ.get("DUMPKIT_DEBUGINFOD", "") not in ("", "0")
    args.debuginfod = bool(args.debuginfod or getattr(args, "sub_debuginfod", False) or env)
    for name in ("sub_debuginfo", "sub_vmcoreinfo", "sub_debuginfod"):
        if hasattr(args, name):
            delattr(args, name)
    if args.vmcoreinfo is not None and (args.command not in VMCOREINFO_COMMANDS or
                                        (args.command == "verdict" and not args.capture_dump)):
        parser.error("--vmcoreinfo applies to the dump of info, pci and dmar, and to verdict --capture-dump")


def _open_kwargs(args, vmcoreinfo: bool = True) -> dict:
    kw: dict = {"debuginfo": args.debuginfo}
    if vmcoreinfo and args.vmcoreinfo:
        kw["vmcoreinfo"] = args.vmcoreinfo
    if args.debuginfod:   # only when set: dumpkit.open of older versions has no such keyword
        kw["debuginfod"] = True
    return kw


# --- inputs, kernel data, output ---------------------------------------------------------

def _is_file_source(source: str) -> bool:
    return source != "live" and not source.startswith("qmp:")


def _check_dump(source: str) -> None:
    """A dump file given on the command line: present, a regular file, complete (exit 3/5)
    before any analysis starts. live and qmp: are checked when attached. Commands that open
    their one dump straight after their cheap checks leave this to ``dumpkit.open``, which
    makes the same inspection first (reading the page table of a dump twice costs time)."""
    if _is_file_source(str(source)):
        from dumpkit.target.corefile import inspect_core_file

        inspect_core_file(source)


def _check_file(path: str, what: str) -> None:
    """A log or other input file: present and readable (exit 3/5). Pipes are allowed
    (``--log <(zcat syslog.gz)``)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise file_error(e, f"{what} {p}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {p} is a directory", "pass the file inside it")
    if not os.access(p, os.R_OK):
        raise AccessError(f"{what} {p}: permission denied", "make it readable")


def _check_vmcoreinfo(args) -> None:
    if args.vmcoreinfo:
        from dumpkit.target.corefile import read_vmcoreinfo_file

        read_vmcoreinfo_file(args.vmcoreinfo)


def _excluded_page(source: str, error: Exception) -> str | None:
    """The dump-level reason of a read that hit a page the dump file left out, if it did."""
    import drgn

    if not isinstance(error, drgn.FaultError) or "Excluded page" not in str(error):
        return None
    from dumpkit.target.corefile import inspect_core_file
    from dumpkit.target.pagemap import excluded_page_reason

    try:
        return excluded_page_reason(error, inspect_core_file(source))
    except DumpkitError:
        return None


@contextlib.contextmanager
def _kernel_data(source: str):
    """Errors raised while opening a dump and reading the kernel's data in it: a missing or
    unreadable file is exit 3/5, a full or read-only disk met while writing (an output, a
    temporary file) is exit 8, anything else drgn could not read is exit 7."""
    import errno

    import drgn

    try:
        yield
    except BrokenPipeError:
        raise
    except PermissionError as e:
        raise AccessError(f"{e.filename or source}: permission denied", "make it readable") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise InputError(f"{e.filename or source}: {e.strerror}", "check the path") from None
    except (drgn.FaultError, LookupError, AttributeError, OSError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            where = e.filename or "a temporary file (TMPDIR) or the output"
            raise OutputError(f"writing {where} failed: {e.strerror}",
                              "free space or choose another location (TMPDIR for temporary files)") from None
        # reading kernel data through drgn failed somewhere no collector expected it:
        # one line for the user; DUMPKIT_DEBUG=1 shows the traceback
        if os.environ.get("DUMPKIT_DEBUG"):
            raise
        excluded = _excluded_page(source, e)
        if excluded:
            raise AnalysisError(f"{source}: reading the kernel's data failed: {excluded}") from None
        raise AnalysisError(f"{source}: reading the kernel's data failed ({type(e).__name__}: {e})",
                            "the dump may be incomplete or from a kernel dumpkit does not know "
                            "(DUMPKIT_DEBUG=1 for details)") from None


@contextlib.contextmanager
def _writing(where: str):
    """Errors writing output are the output's (exit 8), never the dump's; a closed pipe is
    passed on to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputError(f"writing {where} failed: {e.strerror or e}",
                          "free space on that disk or write elsewhere") from None


@contextlib.contextmanager
def _writing_stdout():
    """:func:`_writing` for standard output. When writing fails (a full disk, an I/O
    error) the bytes Python's buffered stdout still holds would be flushed again at
    interpreter exit, fail again, print "Exception ignored ..." and turn the exit code
    into 120; so stdout is pointed at /dev/null first, and the error stays the one line
    and exit 8. (Unbuffered stdout, PYTHONUNBUFFERED=1, keeps nothing and never showed it.)"""
    try:
        with _writing("standard output"):
            yield
    except OutputError:
        _quiet_stdout()
        raise


def _emit(text: str) -> None:
    with _writing_stdout():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


@contextlib.contextmanager
def _stages(desc: str, total: int):
    """A progress bar over ``total`` stages of work, on stderr only when it is a terminal,
    shown once the work has taken a second (``DUMPKIT_PROGRESS_DELAY`` seconds) and cleared
    when done. Yields ``stage(text)``, called as each stage starts."""
    if not sys.stderr.isatty():
        yield lambda text: None
        return
    from tqdm import tqdm

    try:
        delay = max(0.0, float(os.environ.get("DUMPKIT_PROGRESS_DELAY", "1")))
    except ValueError:
        delay = 1.0
    bar = tqdm(total=total, desc=desc, file=sys.stderr, delay=delay, leave=False, dynamic_ncols=True,
               mininterval=0,
               bar_format="{desc}: {n}/{total} {bar} {elapsed} {postfix}")
    started = 0

    def stage(text: str) -> None:
        nonlocal started
        bar.set_postfix_str(text, refresh=False)   # a refresh would draw before the delay
        bar.update(1 if started else 0)
        started += 1

    try:
        yield stage
    finally:
        bar.close()


def _check_output(path: str, inputs=(), dumps=()) -> None:
    """Refuse an output that is one of the inputs, the capture logs found beside ``dumps``
    included: they are evidence, and read later than this check."""
    from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.triage import check_output

    beside = [log for d in dumps if d for log in find_capture_logs(Path(d))]
    check_output(path, [p for p in (*inputs, *dumps, *beside) if p])


# --- commands -----------------------------------------------------------------------------

def _open(args):
    import dumpkit

    return dumpkit.open(args.source, **_open_kwargs(args))


def _info_lines(dump) -> list[str]:
    info = dump.info
    kd = dump.kdump()
    rows = [
        ("source", info.source),
        ("format", info.format),
        ("kernel", f"{info.kernel_release} ({info.arch})"),
        ("build-id", info.build_id),
        ("debug file", f"{info.debug_file} ({info.debug_file_origin})"),
        ("crash time", info.crash_time.isoformat() if info.crash_time else None),
        ("panic", info.panic_message),
        ("crashed task", info.crashed_task),
        ("uptime", f"{info.uptime_s:.3f} s" if info.uptime_s is not None else None),
        ("command line", info.command_line),
        ("capture kernel", kd.capture_kernel),
        ("reset_devices", kd.reset_devices),
        ("crash kernel loaded", kd.crash_kernel_loaded),
        ("crash kernel call", kd.crash_kernel_call if kd.crash_kernel_loaded else None),
        ("crash kernel cmdline", kd.crash_kernel_cmdline),
        ("crash memory", ", ".join(f"{a:#x}-{b:#x}" for a, b in kd.crash_memory) or None),
        ("crash image segments", ", ".join(f"{m:#x}+{n:#x}" for m, n in kd.crash_kernel_segments) or None),
    ]
    reasons = {**info.unknown, **{k: v for k, v in kd.unknown.items()}}
    keys = {"crash time": "crash_time", "panic": "panic_message", "crashed task": "crashed_task",
            "uptime": "uptime_s", "command line": "command_line", "capture kernel": "capture_kernel",
            "reset_devices": "reset_devices", "crash kernel loaded": "crash_kernel_loaded",
            "crash kernel cmdline": "crash_kernel_cmdline", "crash kernel call": "crash_kernel_loaded",
            "crash memory": "crash_kernel_reserved", "crash image segments": "crash_kernel_loaded"}
    lines = []
    for label, value in rows:
        if value is None:
            value = f"unknown ({reasons.get(keys.get(label, ''), 'not recorded')})"
        lines.append(f"{label + ':':22}{value}")
    if info.crash_stack:
        lines.append(f"{'crash stack:':22}" + " <- ".join(info.crash_stack[:12]))
    return lines


def _modules(dump) -> list | None:
    """The kernel's modules when this dumpkit's Dump lists them, else None."""
    modules = getattr(dump, "modules", None)
    if modules is None:
        return None
    return list(modules() if callable(modules) else modules)


def _module_lines(modules: list) -> list[str]:
    """The module table of ``info``; an entry with status "unreadable" is where the dump's
    module list could not be followed: a line of its own, not counted as a module."""
    cuts = [m for m in modules if getattr(m, "status", None) == "unreadable"]
    mods = [m for m in modules if m not in cuts]
    loaded = sum(1 for m in mods if getattr(m, "debug_file", None))
    lines = [f"{'modules:':22}" + (f"{len(mods)} loaded, debug info for {loaded}" if mods else "none loaded")
             + (" (the list is cut: more may be loaded)" if cuts else "")]
    for m in mods:
        address = getattr(m, "address", None)
        where = f"{address:#x}" if isinstance(address, int) else "-"
        detail = getattr(m, "debug_file", None) or getattr(m, "reason", None) or getattr(m, "status", "")
        lines.append(f"  {m.name:24} {where:18} {getattr(m, 'build_id', None) or '-':40}  {detail}")
    lines += [f"  module list cut: {getattr(m, 'reason', None) or m.name}" for m in cuts]
    return lines


def _plain(obj):
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(vars(obj))


def cmd_info(args) -> int:
    _check_vmcoreinfo(args)
    with _kernel_data(args.source):
        dump = _open(args)
        modules = _modules(dump)
        if args.json:
            out = {"info": _plain(dump.info), "kdump": _plain(dump.kdump())}
            if args.sha256:
                out["info"]["sha256"] = dump.sha256()
            if modules is not None:
                out["modules"] = [_plain(m) for m in modules]
            text = json.dumps(out, indent=1, default=str)
        else:
            lines = _info_lines(dump)
            if args.sha256:
                lines.append(f"{'sha256:':22}{dump.sha256()}")
            if modules is not None:
                lines += _module_lines(modules)
            text = "\n".join(lines)
    _emit(text)
    return 0


def _pci_filter(args):
    """lspci's one filter from every -s and -d, in the order given (a later one overrides
    the fields it gives); None when neither was given. Exit 2 with pciutils' own message
    for what lspci refuses."""
    from dumpkit.pci.select import FilterError, parse_id, parse_slot

    f = None
    for flag, text in args.select or []:
        try:
            f = (parse_slot if flag == "-s" else parse_id)(text, f)
        except FilterError as e:
            fix = ("write [[[[DOMAIN]:]BUS]:][DEV][.[FUNC]] in hex, for example 02:00.0, 2:0.0, 02: or .1"
                   if flag == "-s" else "write [VENDOR]:[DEVICE][:CLASS[:PROGIF]] in hex, for example 8086: or ::0200")
            raise UsageError(f"{flag} {text}: {e}", fix) from None
    return f


class _SelectAction(argparse.Action):
    """-s and -d append (flag, text) to one list, so that they apply in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        flag = "-s" if option_string in ("-s", "--slot") else "-d"
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((flag, values))
        setattr(namespace, self.dest, items)


def _pci_view(args) -> str:
    """Which view ``pci`` prints: tree (-t, or no option), verbose (-v), list (lspci's one
    line per function: -s, -d, -n or -k without -t/-v), json, csv."""
    if args.json or args.csv:
        return "json" if args.json else "csv"
    if args.tree:
        return "tree"
    if args.verbose:
        return "verbose"
    if args.select or args.numeric or args.kernel:
        return "list"
    return "tree"


def cmd_pci(args) -> int:
    from dumpkit.pci import collect_pci
    from dumpkit.pci.render import NAMES_AND_NUMBERS, detail_text, terse_text, to_frame, to_json, tree_text

    if args.verbose and (args.json or args.csv):
        raise UsageError("-v applies to text output", "drop --json/--csv, or -v")
    if args.numeric and (args.json or args.csv):
        raise UsageError("-n applies to text output (--json and --csv give names and numbers)",
                         "drop -n, or --json/--csv")
    view = _pci_view(args)
    if args.kernel and view == "tree":
        raise UsageError("-k applies to the list, -v, --json and --csv views, not the tree",
                         "drop -t, or -k")
    f = _pci_filter(args)
    _check_vmcoreinfo(args)
    with _kernel_data(args.source):
        dump = _open(args)
        tree = collect_pci(dump.prog)
        selected = [d for d in tree if f is None or f.matches(d)]
        modules = None
        if selected and (args.kernel or view == "verbose"):
            from dumpkit.pci.drivers import kernel_modules

            found = kernel_modules(dump.prog, selected)
            for error in found.errors:
                print(f"dumpkit: warning: kernel modules: {error}", file=sys.stderr)
            modules = found.by_bdf
    if selected:
        from dumpkit.pci.collect import PciTree

        part = PciTree(selected, pci_ids=tree.pci_ids, errors=tree.errors)
        if view == "json":
            text = to_json(part, modules=modules if args.kernel else None)
        elif view == "csv":
            text = to_frame(part, modules=modules if args.kernel else None).to_csv()
        elif view == "verbose":
            text = detail_text(tree, [d.bdf for d in selected], numeric=args.numeric or NAMES_AND_NUMBERS,
                               modules=modules)
        elif view == "list":
            text = terse_text(tree, selected, numeric=args.numeric, kernel=args.kernel, modules=modules,
                              domains=True if args.domains else None)
        else:
            text = tree_text(tree, select=None if f is None else f.matches, numeric=args.numeric)
        _emit(text)
    # nothing selected: no output and exit 0, as lspci
    if tree.errors:
        # what could be read is printed; the first problem is the error line
        raise AnalysisError(tree.errors[0], f"{len(tree)} functions shown")
    return 0


def cmd_iommu(args) -> int:
    from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.iommu.collect import collect_iommu
    from dumpkit.iommu.render import iommu_json, iommu_text

    for log in args.log or []:
        _check_file(log, "log")
    _check_vmcoreinfo(args)
    with _kernel_data(args.source):
        dump = _open(args)
        logs = list(args.log or [])
        if not logs and not args.no_auto_log:
            logs = find_capture_logs(dump.path)
            for log in logs:
                print(f"dumpkit: using the capture log beside the dump: {log}", file=sys.stderr)
        state = collect_iommu(dump, logs)
        text = json.dumps(iommu_json(state), indent=1, default=str) if args.json else iommu_text(state)
    _emit(text)
    return 0


def _judge(source: str, args, capture_logs, capture_dump_path, stage=lambda text: None):
    """Open a dump (and its capture dump) and judge it; ``stage(text)`` is told as each
    step starts (see :func:`_stages`)."""
    import dumpkit
    from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.verdict import judge

    stage(f"opening {Path(source).name}")
    dump = dumpkit.open(source, **_open_kwargs(args, vmcoreinfo=False))
    logs = list(capture_logs or [])
    if not logs and not dump.kdump().capture_kernel:
        logs = find_capture_logs(dump.path)
        for log in logs:
            print(f"dumpkit: using the capture log beside the dump: {log}", file=sys.stderr)
    cap = None
    if capture_dump_path:
        stage(f"opening {Path(capture_dump_path).name}")
        cap = dumpkit.open(capture_dump_path, **_open_kwargs(args))
    stage(f"judging {Path(source).name}")
    return dump, judge(dump, logs, cap, force=getattr(args, "force", False))


def cmd_verdict(args) -> int:
    from dumpkit.verdict_render import verdict_json, verdict_text

    for log in args.capture_log or []:
        _check_file(log, "capture log")
    if args.capture_dump:
        _check_dump(args.capture_dump)
    _check_vmcoreinfo(args)
    with _stages("verdict", 3 if args.capture_dump else 2) as stage, _kernel_data(args.source):
        dump, v = _judge(args.source, args, args.capture_log, args.capture_dump, stage)
        text = (json.dumps(verdict_json(v, dump.sha256()), indent=1, default=str) if args.json
                else verdict_text(v))
    _emit(text)
    return 0


def _compare_side(role: str, source: str, args, stage):
    """Open and judge one side of a comparison (capture logs found beside the dump)."""
    from dumpkit.verdict_render import DumpSide

    with _kernel_data(source):
        dump, verdicts = _judge(source, args, None, None, stage)
    return DumpSide(role, source, verdicts, kernel_release=dump.info.kernel_release, build_id=dump.info.build_id,
                    debuginfo=[str(p) for p in args.debuginfo or []])


def cmd_compare(args) -> int:
    from dumpkit.verdict_render import compare_frame, compare_json, compare_text, compare_verdicts

    _check_dump(args.before)
    _check_dump(args.after)
    with _stages("compare", 4) as stage:
        before = _compare_side("before", args.before, args, stage)
        after = _compare_side("after", args.after, args, stage)
    if args.csv:
        text = compare_frame(before.verdicts, after.verdicts).to_csv()
    elif args.json:
        text = json.dumps(compare_json(compare_verdicts(before, after)), indent=1, default=str)
    else:
        text = compare_text(compare_verdicts(before, after))
    _emit(text)
    return 0


def cmd_triage(args) -> int:
    from dumpkit.triage import RowWriter, find_dumps

    if args.format == "parquet" and args.output is None:
        raise UsageError("--format parquet needs -o FILE or -o DIR", "give an output file or directory")
    paths = find_dumps(args.paths)
    if not paths:
        raise InputError(f"no dumps found in {', '.join(args.paths)}",
                         "pass vmcore files or the directories holding them")
    if args.engine == "fork" and (args.scheduler or args.scheduler_file):
        raise UsageError("--scheduler and --scheduler-file need --engine dask", "drop --engine fork")
    dataset = args.format == "parquet" and args.output is not None and (
        Path(args.output).is_dir() or not args.output.endswith(".parquet"))
    if dataset:
        return _triage_dataset(args, paths)
    if args.output:
        _check_output(args.output, [*args.paths, *(args.debuginfo or [])], dumps=paths)
    writer = RowWriter(args.output, args.format)
    with _terminate_as_interrupt():
        return _triage_rows(args, paths, writer)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a batch system's stop, ``kill``) ends triage as Ctrl-C does: the rows of
    the dumps that finished are written and the output is complete."""
    import signal

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _triage_rows(args, paths, writer) -> int:
    from dumpkit.triage import KIND_CAPTURE, iter_triage, iter_triage_cluster

    progress = sys.stderr.isatty()
    finished: list = []
    rows: list[dict] = []
    if args.engine == "fork":
        gen = iter_triage(paths, jobs=args.jobs or 1, timeout=args.timeout, debuginfo=args.debuginfo,
                          progress=progress, debuginfod=args.debuginfod, finished=finished)
    else:
        gen = iter_triage_cluster(paths, timeout=args.timeout, debuginfo=args.debuginfo, progress=progress,
                                  debuginfod=args.debuginfod, finished=finished, workers=args.jobs,
                                  scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                                  memory_limit=args.memory_limit, index=_triage_index(args))
    try:
        for _i, row in gen:
            writer.write(row)
            rows.append(row)
    except BaseException as e:
        gen.close()                      # stops the workers, hands over the finished rows
        try:
            for _i, row in finished:
                writer.write(row)
                rows.append(row)
        finally:
            writer.close()
        if isinstance(e, KeyboardInterrupt):
            if progress:
                print(file=sys.stderr)
            raise Interrupted(f"interrupted after {len(rows)} of {len(paths)} dumps",
                              f"their rows are in {writer.where}") from None
        raise
    writer.close()
    failed = [r for r in rows if r["status"] != "ok"]
    if progress:
        captures = sum(1 for r in rows if r.get("kind") == KIND_CAPTURE)
        print(f"triage: {len(rows) - captures - len(failed)} crashes, {captures} capture-state dumps, "
              f"{len(failed)} failed", file=sys.stderr)
    for r in failed:
        print(f"dumpkit: {r['path']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _triage_index(args):
    """Debug files by build-id under --debuginfo trees and /usr/lib/debug: each dump is
    opened with its own kernel's vmlinux and module directory."""
    from dumpkit.fleet.debugindex import DebugIndex

    for p in args.debuginfo or []:
        if not os.path.exists(p):
            raise DumpkitError(f"debug info path {p} does not exist",
                               "pass a vmlinux, module debug files or an unpacked debug package")
    return DebugIndex.build(args.debuginfo or [])


def _triage_dataset(args, paths) -> int:
    """-o DIR --format parquet: the fleet dataset, one fragment per dump as it finishes;
    dumps already in it (same file, same dumpkit version, status ok) are skipped unless --force."""
    from dumpkit.fleet.dataset import Dataset
    from dumpkit.fleet.engine import connect, run_on_cluster
    from dumpkit.triage import KIND_CAPTURE
    from dumpkit.triage.fleetrow import analyse_for_fleet

    if args.engine == "fork":
        raise UsageError("a Parquet dataset directory needs --engine dask",
                          "drop --engine fork, or give -o FILE.parquet")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write dataset {out}: it is a file", "give a directory")
    if not (out if out.exists() else out.parent if str(out.parent) else Path(".")).is_dir():
        raise OutputError(f"cannot write {out}: directory {out.parent} does not exist", "create it first")
    ds = Dataset(out)
    try:
        ds.create()
    except OSError as e:
        raise OutputError(f"cannot write dataset {out}: {e.strerror}", "choose a writable location") from None
    paths = [p.resolve() for p in paths]
    shas, stats = (set(), set()) if args.force else ds.done()
    todo = []
    for p in paths:
        st = p.stat()
        if (str(p), st.st_size, st.st_mtime_ns) not in stats:
            todo.append(p)
    skipped = len(paths) - len(todo)
    progress = sys.stderr.isatty()
    rows: list[dict] = []
    try:
        if todo:
            with connect(args.scheduler, args.scheduler_file, args.jobs, args.memory_limit) as client:
                results = run_on_cluster(client, todo, analyse_for_fleet, index=_triage_index(args),
                                         debuginfo=args.debuginfo,
                                         debuginfod=args.debuginfod, timeout=args.timeout, skip_shas=shas,
                                         want_sha=True, progress=progress,
                                         memory_limit=None if args.scheduler or args.scheduler_file
                                         else args.memory_limit)
                try:
                    for _i, result in results:
                        if result["skipped"]:
                            skipped += 1
                            continue
                        try:
                            ds.write(result["row"], result["endpoints"])
                        except OSError as e:
                            raise OutputError(f"writing dataset {out} failed: {e.strerror}",
                                              "free space or choose another location") from None
                        rows.append(result["row"])
                finally:
                    results.close()
    except KeyboardInterrupt:
        if progress:
            print(file=sys.stderr)
        raise Interrupted(f"interrupted after {len(rows)} of {len(todo)} dumps",
                          f"their rows are in {out}; run again to do the rest") from None
    failed = [r for r in rows if r["status"] != "ok"]
    captures = sum(1 for r in rows if r.get("kind") == KIND_CAPTURE)
    if progress:
        print(f"triage: {len(rows) - captures - len(failed)} crashes, {captures} capture-state dumps, "
              f"{len(failed)} failed, {skipped} already in {out}", file=sys.stderr)
    for r in failed:
        print(f"dumpkit: {r['path']}: {r['reason']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args) -> int:
    from dumpkit.report import render_report

    _check_dump(args.source)
    if args.after:
        _check_dump(args.after)
    for log in (args.capture_log or []) + (args.after_capture_log or []):
        _check_file(log, "capture log")
    _check_output(args.output, (args.capture_log or []) + (args.after_capture_log or [])
                  + [p for p in (args.notebook, *(args.debuginfo or [])) if p],
                  dumps=[p for p in (args.source, args.after) if p and _is_file_source(p)])
    if args.debuginfod:      # render_report opens the dump itself, also inside the notebook kernel
        os.environ["DUMPKIT_DEBUGINFOD"] = "1"
    with _kernel_data(args.source):
        try:
            out = render_report(args.source, args.output, notebook=args.notebook,
                                capture_log=[] if args.no_capture_log else args.capture_log,
                                debuginfo=args.debuginfo, after=args.after, after_capture_log=args.after_capture_log,
                                progress=sys.stderr.isatty(), show_code=args.show_code)
        except OSError as e:
            if isinstance(e, BrokenPipeError) or not e.filename or Path(e.filename) != Path(args.output):
                raise
            raise OutputError(f"writing {args.output} failed: {e.strerror}",
                              "free space on that disk or write elsewhere") from None
    _emit(str(out))
    return 0


def cmd_notebooks(args) -> int:
    from dumpkit.report import copy_notebooks

    paths = copy_notebooks(args.dir, overwrite=args.force)
    _emit("\n".join(str(p) for p in paths))
    return 0


FAULT_FIELDS = ["time", "source", "kind", "iommu", "unit", "requester", "pasid", "address", "access",
                "reason_code", "reason", "raw"]


def cmd_faults(args) -> int:
    from dumpkit.iommu.faults import parse_log
    from dumpkit.iommu.render import fault_line

    for log in args.logs:
        if log != "-":
            _check_file(log, "log")
    from dumpkit.logs import read_log

    records = []
    names = ["standard input" if log == "-" else str(log) for log in args.logs]
    for log, name in zip(args.logs, names, strict=True):
        text = read_log(log)
        for warning in text.warnings:
            print(f"dumpkit: warning: {warning}", file=sys.stderr)
        records += parse_log(text.text, name)
    if args.json:
        text = json.dumps([_plain(r) for r in records], indent=1, default=str)
    elif args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, FAULT_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            row = _plain(r)
            if row["address"] is not None:
                row["address"] = f"{row['address']:#x}"
            w.writerow(row)
        text = buf.getvalue()
    else:
        lines = [f"{len(records)} IOMMU fault records and events in {', '.join(names)}"]
        lines += [f"  {fault_line(r)}" for r in records]
        text = "\n".join(lines)
    _emit(text)
    return 0


# --- parser and main ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dumpkit", description="Which PCIe endpoints were still doing DMA "
                                 "when the kernel died, and what that did to the kdump kernel.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(ap, after_command=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help="what to do (dumpkit COMMAND --help for its options)")

    def command(name: str, help: str, func, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        epilog += "\n\nsources, exit codes and every command: dumpkit --help"
        p = sub.add_parser(name, help=help, description=help, epilog=epilog, aliases=list(aliases),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    source_help = "the dump: a vmcore file, live, or qmp:SOCKET"

    p = command("info", "kernel, crash and kdump facts of a dump, and its modules", cmd_info)
    p.add_argument("source", help=source_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sha256", action="store_true", help="also hash the dump file (reads all of it)")

    p = command("pci", "the PCI tree with DMA-relevant state", cmd_pci)
    p.add_argument("source", help=source_help)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--tree", "-t", action="store_true",
                     help="the tree in the shape of lspci -tv, each line's last function marked with its BDF, "
                          "driver and DMA flags (default without -s, -d, -n, -k)")
    fmt.add_argument("--json", action="store_true", help="JSON: every field, numbers and hex strings")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per function")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="one block per function like lspci -vv -nn: ids and names, class, subsystem, struct "
                        "pci_dev address, saved Command/Status, IRQ, BARs, bridge windows, PCIe link, MSI, AER, "
                        "kernel state, DMA at crash, driver and modules (with --tree: the tree, which names "
                        "functions anyway)")
    p.add_argument("-s", "--slot", action=_SelectAction, dest="select", metavar="SLOT",
                   help="[[[[DOMAIN]:]BUS]:][DEV][.[FUNC]]: only these functions, as lspci -s (hex; empty or * = any): 02:00.0, 2:0.0, "
                        "0000:02:00.0, 02: (a bus), 1f (a device on any bus), .1 (function 1 anywhere); "
                        "with any view. No match: no output, exit 0. Several -s/-d refine one filter "
                        "as with lspci (a later one sets only the fields it gives)")
    p.add_argument("-d", "--id", action=_SelectAction, dest="select", metavar="IDS",
                   help="[VENDOR]:[DEVICE][:CLASS[:PROGIF]]: only functions with these ids, as lspci -d (hex; empty or * = any; x in CLASS is a "
                        "wildcard digit): 8086:10d3, 1af4:, ::0200, ::02xx")
    p.add_argument("-n", dest="numeric", action="count", default=0,
                   help="numeric ids instead of names (-n), or both as lspci -nn: "
                        "'Ethernet controller [0200]: Intel Corporation 82574L ... [8086:10d3]' (-nn); "
                        "without -t/-v: one line per function, as plain lspci")
    p.add_argument("-k", dest="kernel", action="store_true",
                   help="the kernel driver in use and the loaded modules whose PCI driver matches each function, "
                        "as lspci -k (built-in drivers and modules not loaded are not known from a dump); "
                        "without -v: one line per function with its Subsystem, driver and modules; with "
                        "--json/--csv: a kernel_modules field")
    p.add_argument("-D", dest="domains", action="store_true",
                   help="always show the PCI domain in the one-line list (lspci -D; by default only when some "
                        "function is outside domain 0000)")

    p = command("iommu", "IOMMU units (Intel VT-d, AMD-Vi), per-device translation entries, mappings, "
                "in-memory event logs, and fault records (alias: dmar)", cmd_iommu, aliases=("dmar",))
    p.add_argument("source", help=source_help)
    p.add_argument("--log", action="append", metavar="FILE",
                   help="a text log to read faults from (capture kernel dmesg, vmcore-dmesg.txt, serial "
                        "console); repeatable. Default: such a log beside the dump, if any")
    p.add_argument("--no-auto-log", action="store_true", help="do not look for a capture log beside the dump")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("verdict", "per endpoint: could it DMA, did it after the crash, did it hit the capture "
                "kernel, did a reset stop it", cmd_verdict)
    p.add_argument("source", help="the crashed (first) kernel's dump")
    p.add_argument("--capture-log", action="append", metavar="FILE",
                   help="the capture kernel's log; repeatable. Default: the log beside the dump under the "
                        "capture tools' names (kdump-tools dmesg.STAMP, RHEL vmcore-dmesg.txt, SUSE dmesg.txt, "
                        "capture-dmesg.txt)")
    p.add_argument("--capture-dump", metavar="FILE", help="a dump of the running capture kernel (copied tables)")
    p.add_argument("--force", action="store_true",
                   help="use capture logs that do not match this crash (elfcorehdr, crashkernel reservation) "
                        "instead of refusing them; a warning says so")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("compare", "verdicts of two dumps side by side (before/after a patch)", cmd_compare)
    p.add_argument("before", help="the first dump (for example without the reset patch)")
    p.add_argument("after", help="the second dump (for example with it)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="JSON: both dumps' inputs and verdicts, every endpoint's claims on both sides, the changes")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per endpoint with both sides' columns")

    p = command("triage", "many dumps into one table on a dask.distributed cluster (embedded by default), each "
                "dump a task with time and memory limits; rows are written as dumps finish, capture-state "
                "dumps are marked, not counted as crashes. -o DIR --format parquet writes the resumable "
                "fleet dataset (docs/fleet-triage.md)", cmd_triage)
    p.add_argument("paths", nargs="+", metavar="PATH", help="dump files or directories to search for dumps")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes of the embedded cluster (one thread each), at least 1 "
                        "(default: one per core, as many as fit in memory at --memory-limit each)")
    p.add_argument("--timeout", type=_positive_seconds, default=300,
                   help="seconds allowed per dump; a dump over it gets an error row (default 300)")
    p.add_argument("--memory-limit", type=_memory_size, default=4 << 30, metavar="SIZE",
                   help="memory per worker of the embedded cluster, so per dump (default 4GiB); a worker "
                        "over it is restarted and its dump retried once, then reported")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on this existing dask cluster instead of an embedded one (workers must see "
                        "the dumps and debug trees under the same paths)")
    p.add_argument("--scheduler-file", metavar="FILE", help="run on the dask cluster this scheduler file names")
    p.add_argument("--engine", choices=["dask", "fork"], default="dask",
                   help="dask (default) or fork: one forked process per dump, no dataset")
    p.add_argument("--force", action="store_true",
                   help="with a dataset: analyse again dumps already in it (default: skip them)")
    p.add_argument("--format", choices=["csv", "json", "jsonl", "parquet"], default="csv",
                   help="csv (default), json (an array), jsonl (one object a line) or parquet: with -o DIR "
                        "(a directory, or a name not ending in .parquet) the fleet dataset DIR/dumps and "
                        "DIR/endpoints, one fragment per dump; with -o FILE.parquet one table (rows kept in "
                        "FILE.partial.jsonl until it is written)")
    p.add_argument("-o", "--output", metavar="FILE|DIR", help="write the table here (default: standard "
                   "output); its directory must exist")

    p = command("report", "one dump (or two, before/after) as HTML with the provenance of every input",
                cmd_report)
    p.add_argument("source", help=source_help)
    p.add_argument("--capture-log", action="append", metavar="FILE",
                   help="the capture kernel's log; repeatable (default: the logs saved beside the dump)")
    p.add_argument("--no-capture-log", action="store_true", help="use no capture log, not even one beside the dump")
    p.add_argument("--after", metavar="DUMP", help="a second dump to compare with (for example with the reset patch)")
    p.add_argument("--after-capture-log", action="append", metavar="FILE", help="the second dump's capture log")
    p.add_argument("--notebook", default=None,
                   help="a packaged notebook by name (default: 01-investigate, or 02-dma-at-crash-before-after "
                        "with --after; dumpkit notebooks DIR lists them by copying them out)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html",
                   help="the HTML file to write; its directory must exist")
    p.add_argument("--show-code", action="store_true",
                   help="include the notebook's code cells (default: its text and outputs only)")

    p = command("notebooks", "copy the packaged notebooks into a directory for JupyterLab", cmd_notebooks)
    p.add_argument("dir", metavar="DIR", help="where to copy them (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already there")

    p = command("faults", "IOMMU fault records and events of text logs, without a dump (dmesg, "
                "vmcore-dmesg.txt, serial console, syslog, journal)", cmd_faults)
    p.add_argument("logs", nargs="+", metavar="LOG", help="log files (- for standard input)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--table", action="store_true", help="one line per record (default)")
    fmt.add_argument("--json", action="store_true", help="JSON, every field of every record")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per record, addresses in hex")

    for name, parser in {id(p): (n, p) for n, p in sub.choices.items()}.values():   # aliases share a parser
        _add_global_options(parser, after_command=True, which=_global_options_of(name))
    return ap


def _global_options_of(command: str) -> tuple[str, ...]:
    """The global options a command uses, so accepts after its name and lists in its --help."""
    return tuple(o for o in GLOBAL_OPTIONS if (command in VMCOREINFO_COMMANDS if o == "--vmcoreinfo"
                                               else command in DEBUGINFO_COMMANDS))


def _refuse_extra(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Arguments no parser took: a global option after a command that does not use it
    is said as such (exit 2), anything else as argparse says it."""
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option == "--vmcoreinfo":
            parser.error("--vmcoreinfo applies to the dump of info, pci and dmar, and to verdict --capture-dump")
        if option in GLOBAL_OPTIONS:
            parser.error(f"{option} does not apply to {args.command}: it reads no dump")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def _quiet_stdout() -> None:
    """After a closed pipe or a failed write: point stdout at /dev/null so the
    interpreter's flush at exit does not report the pipe or the full disk again (Python
    docs, "Note on SIGPIPE"); that failure would make the exit code 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _settle_stdout() -> None:
    """Before an error exit: flush what stdout still holds; if that fails too (the error
    may be that very disk), drop it (:func:`_quiet_stdout`) so that the interpreter's own
    flush at exit cannot fail and change the exit code to 120."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _quiet_stdout()


def _error(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"dumpkit: error: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            _refuse_extra(parser, args, extra)
        _merge_globals(parser, args)
        code = args.func(args)
        with _writing_stdout():
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (| head): nothing more to say, and nothing went wrong
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        _settle_stdout()
        _error("interrupted")
        return Interrupted.exit_code
    except DumpkitError as e:
        _settle_stdout()
        _error(str(e))
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
