"""dumpkit compare: the verdicts of two dumps side by side (before/after a patch)."""

from __future__ import annotations

from dataclasses import dataclass

from dumpkit.cli.output import Records, add_format, emit, render
from dumpkit.cli.shared import check_dump, judge_dump, kernel_data, stages

NAME = "compare"
HELP = "verdicts of two dumps side by side (before/after a patch)"
EXAMPLES = ["dumpkit compare sample-dumps/nocopy-fault/vmcore.kdump sample-dumps/patched-nocopy/vmcore.kdump",
            "dumpkit compare BEFORE AFTER --json",
            "dumpkit compare BEFORE AFTER --csv > changes.csv"]
GLOBALS = ("--debuginfo", "--debuginfod")


def add_arguments(p) -> None:
    p.add_argument("before", help="the first dump (for example without the reset patch)")
    p.add_argument("after", help="the second dump (for example with it)")
    add_format(p, CompareRecords.formats(),
               helps={"--json": "JSON: both dumps' inputs and verdicts, every endpoint's claims on both sides, "
                                "the changes",
                      "--csv": "CSV, one row per endpoint with both sides' columns (the four claims as in --json)"})


@dataclass
class CompareRecords(Records):
    comparison: object

    def text(self) -> str:
        from dumpkit.verdict.compare import compare_text

        return compare_text(self.comparison)

    def data(self) -> dict:
        from dumpkit.verdict.compare import compare_json

        return compare_json(self.comparison)

    def frame(self):
        from dumpkit.verdict.compare import compare_frame

        return compare_frame(self.comparison)


def judge_side(role: str, source: str, args, stage):
    """Open and judge one side of a comparison (capture logs found beside the dump)."""
    from dumpkit.verdict.compare import DumpSide

    with kernel_data(source):
        dump, verdicts = judge_dump(source, args, None, None, stage)
    return DumpSide(role, source, verdicts, kernel_release=dump.info.kernel_release, build_id=dump.info.build_id,
                    debuginfo=[str(p) for p in args.debuginfo or []])


def run(args) -> int:
    from dumpkit.verdict.compare import compare_verdicts

    check_dump(args.before)
    check_dump(args.after)
    with stages("compare", 4) as stage:
        before = judge_side("before", args.before, args, stage)
        after = judge_side("after", args.after, args, stage)
    emit(render(CompareRecords(compare_verdicts(before, after)), args.format))
    return 0
