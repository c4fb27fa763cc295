"""dumpkit faults: the IOMMU fault records and events of text logs, without a dump."""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass

from dumpkit.cli.output import Records, add_format, emit, plain, render
from dumpkit.cli.shared import check_file

NAME = "faults"
HELP = ("IOMMU fault records and events of text logs, without a dump (dmesg, "
        "vmcore-dmesg.txt, serial console, syslog, journal)")
EXAMPLES = ["dumpkit faults vmcore-dmesg.txt",
            "dumpkit faults capture-dmesg.txt.gz --csv",
            "journalctl -k -b -1 | dumpkit faults - --json"]
GLOBALS = ()
FIELDS = ["time", "source", "kind", "iommu", "unit", "requester", "pasid", "address", "access",
          "reason_code", "reason", "raw"]


def add_arguments(p) -> None:
    p.add_argument("logs", nargs="+", metavar="LOG", help="log files (- for standard input)")
    add_format(p, FaultRecords.formats(), flags=("--table", "--json", "--csv"),
               helps={"--table": "one line per record (default)", "--json": "JSON, every field of every record",
                      "--csv": "CSV, one row per record, addresses in hex"})


@dataclass
class FaultRecords(Records):
    records: list
    names: list[str]

    def text(self) -> str:
        from dumpkit.iommu.render import fault_line

        lines = [f"{len(self.records)} IOMMU fault records and events in {', '.join(self.names)}"]
        lines += [f"  {fault_line(r)}" for r in self.records]
        return "\n".join(lines)

    def data(self) -> list:
        return [plain(r) for r in self.records]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.records:
            row = plain(r)
            if row["address"] is not None:
                row["address"] = f"{row['address']:#x}"
            w.writerow(row)
        return buf.getvalue()


def run(args) -> int:
    from dumpkit.iommu.faults import parse_log
    from dumpkit.logs import read_log

    for log in args.logs:
        if log != "-":
            check_file(log, "log")
    records = []
    names = ["standard input" if log == "-" else str(log) for log in args.logs]
    for log, name in zip(args.logs, names, strict=True):
        text = read_log(log)
        for warning in text.warnings:
            print(f"dumpkit: warning: {warning}", file=sys.stderr)
        records += parse_log(text.text, name)
    emit(render(FaultRecords(records, names), args.format))
    return 0
