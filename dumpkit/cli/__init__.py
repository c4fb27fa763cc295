"""The dumpkit command line: one module per command (its arguments, its run function),
:mod:`dumpkit.cli.shared` for what they share (global options, input checks, opening and
judging dumps, errors of the kernel's data, progress) and :mod:`dumpkit.cli.output` for
printing (formats, standard output, closed pipes).

Error policy: every failure a user can cause or meet is one line on stderr, ``dumpkit:
error: WHAT; FIX``, and an exit code from :data:`dumpkit.errors.EXIT_CODES` chosen by what
failed: the command line (2), an input (3, checked before any analysis), debug info (4),
permissions (5), a QMP socket (6), the kernel's data in the dump (7), the output (8), or
Ctrl-C (130). A closed pipe (``| head``) ends quietly with 0. Inputs are only ever read.

A command module has ``NAME``, ``HELP``, ``EXAMPLES`` (its --help ends with them),
``GLOBALS`` (the global options it uses), optionally ``ALIASES`` and
``vmcoreinfo_applies(args)``, ``add_arguments(parser)`` and ``run(args) -> exit code``;
it is listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from dumpkit.cli import compare, faults, info, iommu, notebooks, pci, report, triage, verdict
from dumpkit.cli.output import quiet_stdout, settle_format, settle_stdout, writing_stdout
from dumpkit.cli.shared import add_global_options, merge_globals, refuse_extra
from dumpkit.cli.shared import stages as _stages  # noqa: F401  (tests draw the progress bar through it)
from dumpkit.errors import EXIT_CODES, DumpkitError, Interrupted

__all__ = ["COMMANDS", "build_parser", "main"]

# in the order --help lists them
COMMANDS = (info, pci, iommu, verdict, compare, triage, report, notebooks, faults)

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

formats: commands that print records take --format (text, json, csv; triage: csv, json, jsonl,
parquet); --json, --csv (and faults --table) are its shorthands.

exit codes:
""" + "\n".join(f"  {code:<3} {text}" for code, text in EXIT_CODES.items())


def _add_command(sub, module) -> None:
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in module.EXAMPLES)
    epilog += "\n\nsources, exit codes and every command: dumpkit --help"
    p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, epilog=epilog,
                       aliases=list(getattr(module, "ALIASES", ())),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    applies = getattr(module, "vmcoreinfo_applies", lambda args: "--vmcoreinfo" in module.GLOBALS)
    p.set_defaults(func=module.run, vmcoreinfo_applies=applies)
    module.add_arguments(p)
    add_global_options(p, after_command=True, which=module.GLOBALS)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dumpkit", description="Which PCIe endpoints were still doing DMA "
                                 "when the kernel died, and what that did to the kdump kernel.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(ap, after_command=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help="what to do (dumpkit COMMAND --help for its options)")
    for module in COMMANDS:
        _add_command(sub, module)
    return ap


def _error(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"dumpkit: error: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            refuse_extra(parser, args, extra)
        merge_globals(parser, args)
        settle_format(args)
        code = args.func(args)
        with writing_stdout():
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (| head): nothing more to say, and nothing went wrong
        quiet_stdout()
        return 0
    except KeyboardInterrupt:
        settle_stdout()
        _error("interrupted")
        return Interrupted.exit_code
    except DumpkitError as e:
        settle_stdout()
        _error(str(e))
        return e.exit_code
