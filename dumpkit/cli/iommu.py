"""dumpkit iommu (alias dmar): IOMMU units, per-device translation entries, mappings,
in-memory event logs and fault records, whatever the vendor."""

from __future__ import annotations

from dataclasses import dataclass

from dumpkit.cli.output import Records, add_format, emit, render
from dumpkit.cli.shared import SOURCE_HELP, check_file, check_vmcoreinfo, kernel_data, logs_beside, open_dump
from dumpkit.errors import UsageError

NAME = "iommu"
ALIASES = ("dmar",)
HELP = ("IOMMU units (Intel VT-d, AMD-Vi), per-device translation entries, mappings, "
        "in-memory event logs, and fault records (alias: dmar)")
EXAMPLES = ["dumpkit iommu sample-dumps/nocopy-fault/vmcore.kdump",
            "dumpkit iommu DUMP --log vmcore-dmesg.txt --json",
            "dumpkit iommu DUMP --csv --records faults > faults.csv",
            "dumpkit dmar DUMP --no-auto-log"]
GLOBALS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")
# the tables of dumpkit.iommu.render a CSV can hold, one row per record
TABLES = ("entries", "mappings", "units", "events", "faults")


def add_arguments(p) -> None:
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--log", action="append", metavar="FILE",
                   help="a text log to read faults from (capture kernel dmesg, vmcore-dmesg.txt, serial "
                        "console); repeatable. Default: such a log beside the dump, if any")
    p.add_argument("--no-auto-log", action="store_true", help="do not look for a capture log beside the dump")
    add_format(p, IommuRecords.formats(), helps={"--json": "machine-readable output",
                                                 "--csv": "CSV of the records --records names, one row each"})
    p.add_argument("--records", choices=TABLES, default=None,
                   help="which records --csv gives: entries (default: each device's translation entry), "
                        "mappings (what each device could reach), units, events (in-memory event logs) "
                        "or faults (the logs' fault records, DMA faults resolved to the device and buffer)")


@dataclass
class IommuRecords(Records):
    state: object
    table: str = "entries"

    def text(self) -> str:
        from dumpkit.iommu.render import iommu_text

        return iommu_text(self.state)

    def data(self) -> dict:
        from dumpkit.iommu.render import iommu_json

        return iommu_json(self.state)

    def frame(self):
        from dumpkit.iommu import render

        return getattr(render, f"{self.table}_frame")(self.state)


def run(args) -> int:
    from dumpkit.iommu.collect import collect_iommu

    if args.records and args.format != "csv":
        raise UsageError("--records applies to --csv", "add --csv, or drop --records")
    for log in args.log or []:
        check_file(log, "log")
    check_vmcoreinfo(args)
    with kernel_data(args.source):
        dump = open_dump(args)
        logs = list(args.log or [])
        if not logs and not args.no_auto_log:
            logs = logs_beside(dump)
        text = render(IommuRecords(collect_iommu(dump, logs), args.records or "entries"), args.format)
    emit(text)
    return 0
