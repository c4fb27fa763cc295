"""dumpkit verdict: per endpoint, could it DMA, did it after the crash, did it hit the
capture kernel, did a reset stop it."""

from __future__ import annotations

from dataclasses import dataclass

from dumpkit.cli.output import Records, add_format, emit, render
from dumpkit.cli.shared import check_dump, check_file, check_vmcoreinfo, judge_dump, kernel_data, stages

NAME = "verdict"
HELP = ("per endpoint: could it DMA, did it after the crash, did it hit the capture "
        "kernel, did a reset stop it")
EXAMPLES = ["dumpkit verdict sample-dumps/nocopy-fault/vmcore.kdump",
            "dumpkit verdict DUMP --capture-log dmesg.202611231200 --json",
            "dumpkit verdict DUMP --csv > endpoints.csv",
            "dumpkit verdict DUMP --capture-dump capture-state.kdump --vmcoreinfo capture-vmcoreinfo.txt"]
GLOBALS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")


def vmcoreinfo_applies(args) -> bool:
    """--vmcoreinfo is the capture dump's: it needs --capture-dump."""
    return bool(args.capture_dump)


def add_arguments(p) -> None:
    p.add_argument("source", help="the crashed (first) kernel's dump")
    p.add_argument("--capture-log", action="append", metavar="FILE",
                   help="the capture kernel's log; repeatable. Default: the log beside the dump under the "
                        "capture tools' names (kdump-tools dmesg.STAMP, RHEL vmcore-dmesg.txt, SUSE dmesg.txt, "
                        "capture-dmesg.txt)")
    p.add_argument("--capture-dump", metavar="FILE", help="a dump of the running capture kernel (copied tables)")
    p.add_argument("--force", action="store_true",
                   help="use capture logs that do not match this crash (elfcorehdr, crashkernel reservation) "
                        "instead of refusing them; a warning says so")
    add_format(p, VerdictRecords.formats(), helps={"--json": "machine-readable output",
                                                   "--csv": "CSV, one row per endpoint: each claim's value, "
                                                            "word, basis, phrase and evidence"})


@dataclass
class VerdictRecords(Records):
    verdicts: object
    dump: object

    def text(self) -> str:
        from dumpkit.verdict.render import verdict_text

        return verdict_text(self.verdicts)

    def data(self) -> dict:
        from dumpkit.verdict.render import verdict_json

        return verdict_json(self.verdicts, self.dump.sha256())

    def frame(self):
        from dumpkit.verdict.render import verdict_frame

        return verdict_frame(self.verdicts)


def run(args) -> int:
    for log in args.capture_log or []:
        check_file(log, "capture log")
    if args.capture_dump:
        check_dump(args.capture_dump)
    check_vmcoreinfo(args)
    with stages("verdict", 3 if args.capture_dump else 2) as stage, kernel_data(args.source):
        dump, v = judge_dump(args.source, args, args.capture_log, args.capture_dump, stage)
        text = render(VerdictRecords(v, dump), args.format)
    emit(text)
    return 0
