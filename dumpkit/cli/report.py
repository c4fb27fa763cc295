"""dumpkit report: one dump (or two, before/after) as HTML with the provenance of every input."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dumpkit.cli.output import emit
from dumpkit.cli.shared import SOURCE_HELP, check_dump, check_file, check_output, is_file_source, kernel_data
from dumpkit.errors import OutputError

NAME = "report"
HELP = "one dump (or two, before/after) as HTML with the provenance of every input"
EXAMPLES = ["dumpkit report sample-dumps/nocopy-fault/vmcore.kdump -o report.html",
            "dumpkit report BEFORE --after AFTER -o before-after.html",
            "dumpkit report DUMP -o report.html --show-code      # with the notebook's code cells"]
GLOBALS = ("--debuginfo", "--debuginfod")


def add_arguments(p) -> None:
    p.add_argument("source", help=SOURCE_HELP)
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


def check_inputs(args) -> None:
    """The dumps and logs present, the output none of them (exit 3/5/8)."""
    check_dump(args.source)
    if args.after:
        check_dump(args.after)
    for log in (args.capture_log or []) + (args.after_capture_log or []):
        check_file(log, "capture log")
    check_output(args.output, (args.capture_log or []) + (args.after_capture_log or [])
                 + [p for p in (args.notebook, *(args.debuginfo or [])) if p],
                 dumps=[p for p in (args.source, args.after) if p and is_file_source(p)])


def run(args) -> int:
    from dumpkit.report import render_report

    check_inputs(args)
    if args.debuginfod:      # render_report opens the dump itself, also inside the notebook kernel
        os.environ["DUMPKIT_DEBUGINFOD"] = "1"
    with kernel_data(args.source):
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
    emit(str(out))
    return 0
