"""What every command of the command line shares: the global options and their merging,
the checks of inputs made before any analysis, opening and judging dumps, turning errors
met while reading a dump into their exit codes, and the progress bar.

Printing (standard output, formats, closed pipes) is :mod:`dumpkit.cli.output`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from pathlib import Path

from dumpkit.errors import AccessError, AnalysisError, DumpkitError, InputError, OutputError, file_error

GLOBAL_OPTIONS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")
VMCOREINFO_ERROR = "--vmcoreinfo applies to the dump of info, pci and dmar, and to verdict --capture-dump"
SOURCE_HELP = "the dump: a vmcore file, live, or qmp:SOCKET"


# --- global options -------------------------------------------------------------------------

def add_global_options(parser: argparse.ArgumentParser, after_command: bool,
                       which: tuple[str, ...] = GLOBAL_OPTIONS) -> None:
    """--debuginfo, --debuginfod and --vmcoreinfo (those in ``which``), before COMMAND
    (top-level parser, all three) and after it (each subparser, those the command uses,
    into separate destinations merged by :func:`merge_globals`)."""
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


def merge_globals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The global options given after the command joined to those given before it;
    --vmcoreinfo refused where the command's ``vmcoreinfo_applies(args)`` (a parser
    default, see :func:`dumpkit.cli.build_parser`) says it does not apply."""
    after = getattr(args, "sub_debuginfo", None) or []
    args.debuginfo = (args.debuginfo or []) + after or None
    if getattr(args, "sub_vmcoreinfo", None) is not None:
        args.vmcoreinfo = args.sub_vmcoreinfo
    env = os.environ.get("DUMPKIT_DEBUGINFOD", "") not in ("", "0")
    args.debuginfod = bool(args.debuginfod or getattr(args, "sub_debuginfod", False) or env)
    for name in ("sub_debuginfo", "sub_vmcoreinfo", "sub_debuginfod"):
        if hasattr(args, name):
            delattr(args, name)
    applies = args.vmcoreinfo_applies
    del args.vmcoreinfo_applies
    if args.vmcoreinfo is not None and not applies(args):
        parser.error(VMCOREINFO_ERROR)


def refuse_extra(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Arguments no parser took: a global option after a command that does not use it
    is said as such (exit 2), anything else as argparse says it."""
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option == "--vmcoreinfo":
            parser.error(VMCOREINFO_ERROR)
        if option in GLOBAL_OPTIONS:
            parser.error(f"{option} does not apply to {args.command}: it reads no dump")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def open_kwargs(args, vmcoreinfo: bool = True) -> dict:
    kw: dict = {"debuginfo": args.debuginfo}
    if vmcoreinfo and args.vmcoreinfo:
        kw["vmcoreinfo"] = args.vmcoreinfo
    if args.debuginfod:   # only when set: dumpkit.open of older versions has no such keyword
        kw["debuginfod"] = True
    return kw


# --- inputs, checked before any analysis ------------------------------------------------------

def is_file_source(source: str) -> bool:
    return source != "live" and not source.startswith("qmp:")


def check_dump(source: str) -> None:
    """A dump file given on the command line: present, a regular file, complete (exit 3/5)
    before any analysis starts. live and qmp: are checked when attached. Commands that open
    their one dump straight after their cheap checks leave this to ``dumpkit.open``, which
    makes the same inspection first (reading the page table of a dump twice costs time)."""
    if is_file_source(str(source)):
        from dumpkit.target.corefile import inspect_core_file

        inspect_core_file(source)


def check_file(path: str, what: str) -> None:
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


def check_vmcoreinfo(args) -> None:
    if args.vmcoreinfo:
        from dumpkit.target.corefile import read_vmcoreinfo_file

        read_vmcoreinfo_file(args.vmcoreinfo)


def check_output(path: str, inputs=(), dumps=()) -> None:
    """Refuse an output that is one of the inputs, the capture logs found beside ``dumps``
    included: they are evidence, and read later than this check."""
    from dumpkit.kdump.capture import find_capture_logs
    from dumpkit.triage import check_output as check

    beside = [log for d in dumps if d for log in find_capture_logs(Path(d))]
    check(path, [p for p in (*inputs, *dumps, *beside) if p])


# --- the kernel's data: opening, judging, and what failed -------------------------------------

def open_dump(args):
    import dumpkit

    return dumpkit.open(args.source, **open_kwargs(args))


def logs_beside(dump) -> list:
    """The capture logs found beside the dump, each said on stderr."""
    from dumpkit.kdump.capture import find_capture_logs

    logs = find_capture_logs(dump.path)
    for log in logs:
        print(f"dumpkit: using the capture log beside the dump: {log}", file=sys.stderr)
    return logs


def judge_dump(source: str, args, capture_logs, capture_dump_path, stage=lambda text: None):
    """Open a dump (and its capture dump) and judge it; ``stage(text)`` is told as each
    step starts (see :func:`stages`)."""
    import dumpkit
    from dumpkit.verdict import judge

    stage(f"opening {Path(source).name}")
    dump = dumpkit.open(source, **open_kwargs(args, vmcoreinfo=False))
    logs = list(capture_logs or [])
    if not logs and not dump.kdump().capture_kernel:
        logs = logs_beside(dump)
    cap = None
    if capture_dump_path:
        stage(f"opening {Path(capture_dump_path).name}")
        cap = dumpkit.open(capture_dump_path, **open_kwargs(args))
    stage(f"judging {Path(source).name}")
    return dump, judge(dump, logs, cap, force=getattr(args, "force", False))


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


def _disk_full(e: Exception) -> OutputError | None:
    """A full or read-only disk met while writing (an output, a temporary file): exit 8."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        where = e.filename or "a temporary file (TMPDIR) or the output"
        return OutputError(f"writing {where} failed: {e.strerror}",
                           "free space or choose another location (TMPDIR for temporary files)")
    return None


def _unreadable(source: str, e: Exception) -> AnalysisError:
    """Reading kernel data through drgn failed somewhere no collector expected it: one
    line for the user (exit 7), naming the page the dump left out where that was it."""
    excluded = _excluded_page(source, e)
    if excluded:
        return AnalysisError(f"{source}: reading the kernel's data failed: {excluded}")
    return AnalysisError(f"{source}: reading the kernel's data failed ({type(e).__name__}: {e})",
                         "the dump may be incomplete or from a kernel dumpkit does not know "
                         "(DUMPKIT_DEBUG=1 for details)")


@contextlib.contextmanager
def kernel_data(source: str):
    """Errors raised while opening a dump and reading the kernel's data in it: a missing or
    unreadable file is exit 3/5, a full or read-only disk met while writing (an output, a
    temporary file) is exit 8, anything else drgn could not read is exit 7
    (``DUMPKIT_DEBUG=1``: its traceback instead)."""
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
        full = _disk_full(e)
        if full is not None:
            raise full from None
        if os.environ.get("DUMPKIT_DEBUG"):
            raise
        raise _unreadable(source, e) from None


# --- progress -------------------------------------------------------------------------------

@contextlib.contextmanager
def stages(desc: str, total: int):
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
