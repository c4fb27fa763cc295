"""The dumpkit command line."""

from __future__ import annotations

import argparse
import json
import sys

import drgn

from dumpkit.errors import EXIT_CODES, AnalysisError, DumpkitError

__all__ = ["main"]

EPILOG = """\
sources:
  PATH          a vmcore, ELF or kdump-compressed (makedumpfile, QEMU)
  live          this machine's kernel through /proc/kcore (needs root)
  qmp:SOCKET    a running QEMU guest (-qmp unix:SOCKET,server=on,wait=off -device vmcoreinfo)

examples:
  dumpkit info sample-dumps/nocopy-fault/vmcore.kdump
  dumpkit pci --tree sample-dumps/copied-traffic/vmcore.kdump
  dumpkit pci --csv sample-dumps/idle/vmcore.kdump > idle.csv
  dumpkit dmar sample-dumps/nocopy-fault/vmcore.kdump --log sample-dumps/nocopy-fault/capture-dmesg.txt
  dumpkit verdict sample-dumps/nocopy-fault/vmcore.kdump
  dumpkit compare sample-dumps/nocopy-fault/vmcore.kdump sample-dumps/patched-nocopy/vmcore.kdump
  dumpkit triage sample-dumps --jobs 2 --format csv -o triage.csv
  dumpkit report sample-dumps/nocopy-fault/vmcore.kdump -o report.html
  dumpkit --debuginfo vmlinux info /var/crash/127.0.0.1-2026-11-23/vmcore
  sudo dumpkit pci live

exit codes:
""" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def _open(args):
    import dumpkit

    return dumpkit.open(args.source, debuginfo=args.debuginfo, vmcoreinfo=args.vmcoreinfo)


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
        ("crash kernel cmdline", kd.crash_kernel_cmdline),
    ]
    reasons = {**info.unknown, **{k: v for k, v in kd.unknown.items()}}
    keys = {"crash time": "crash_time", "panic": "panic_message", "crashed task": "crashed_task",
            "uptime": "uptime_s", "command line": "command_line", "capture kernel": "capture_kernel",
            "reset_devices": "reset_devices", "crash kernel loaded": "crash_kernel_loaded",
            "crash kernel cmdline": "crash_kernel_cmdline"}
    lines = []
    for label, value in rows:
        if value is None:
            value = f"unknown ({reasons.get(keys.get(label, ''), 'not recorded')})"
        lines.append(f"{label + ':':22}{value}")
    if info.crash_stack:
        lines.append(f"{'crash stack:':22}" + " <- ".join(info.crash_stack[:12]))
    return lines


def cmd_info(args) -> int:
    dump = _open(args)
    if args.json:
        import dataclasses

        out = {"info": dataclasses.asdict(dump.info), "kdump": dataclasses.asdict(dump.kdump())}
        if args.sha256:
            out["info"]["sha256"] = dump.sha256()
        print(json.dumps(out, indent=1, default=str))
        return 0
    for line in _info_lines(dump):
        print(line)
    if args.sha256:
        print(f"{'sha256:':22}{dump.sha256()}")
    return 0


def cmd_pci(args) -> int:
    from dumpkit.pci import collect_pci
    from dumpkit.pci.render import to_frame, to_json, tree_text

    tree = collect_pci(_open(args).prog)
    if args.json:
        print(to_json(tree))
    elif args.csv:
        to_frame(tree).to_csv(sys.stdout)
    else:
        print(tree_text(tree))
    if tree.errors:
        # what could be read is printed; the first problem is the error line
        raise AnalysisError(tree.errors[0], f"{len(tree)} functions shown")
    return 0


def cmd_dmar(args) -> int:
    from dumpkit.dmar.collect import collect_dmar, find_capture_logs
    from dumpkit.dmar.render import dmar_json, dmar_text

    dump = _open(args)
    logs = list(args.log or [])
    if not logs and not args.no_auto_log:
        logs = find_capture_logs(dump.path)
        for log in logs:
            print(f"dumpkit: using the capture log beside the dump: {log}", file=sys.stderr)
    state = collect_dmar(dump, logs)
    if args.json:
        print(json.dumps(dmar_json(state), indent=1, default=str))
    else:
        print(dmar_text(state))
    return 0


def _judge(source: str, args, capture_logs, capture_dump_path):
    import dumpkit
    from dumpkit.dmar.collect import find_capture_logs
    from dumpkit.verdict import judge

    dump = dumpkit.open(source, debuginfo=args.debuginfo)
    logs = list(capture_logs or [])
    if not logs and not dump.kdump().capture_kernel:
        logs = find_capture_logs(dump.path)
        for log in logs:
            print(f"dumpkit: using the capture log beside the dump: {log}", file=sys.stderr)
    cap = dumpkit.open(capture_dump_path, debuginfo=args.debuginfo) if capture_dump_path else None
    return dump, judge(dump, logs, cap)


def cmd_verdict(args) -> int:
    from dumpkit.verdict_render import verdict_json, verdict_text

    _dump, v = _judge(args.source, args, args.capture_log, args.capture_dump)
    print(json.dumps(verdict_json(v), indent=1, default=str) if args.json else verdict_text(v))
    return 0


def cmd_compare(args) -> int:
    from dumpkit.verdict_render import compare_frame

    _b, before = _judge(args.before, args, None, None)
    _a, after = _judge(args.after, args, None, None)
    frame = compare_frame(before, after)
    if args.csv:
        frame.to_csv(sys.stdout)
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 40):
            print(frame.to_string())
    return 0


def cmd_triage(args) -> int:
    from dumpkit.triage import find_dumps, triage

    paths = find_dumps(args.paths)
    if not paths:
        print("dumpkit: error: no dumps found in the given paths", file=sys.stderr)
        return 2
    if args.format == "parquet" and not args.output:
        print("dumpkit: error: --format parquet needs -o FILE", file=sys.stderr)
        return 2
    rows = triage(paths, jobs=args.jobs, timeout=args.timeout, debuginfo=args.debuginfo,
                  progress=sys.stderr.isatty())
    import pandas as pd

    frame = pd.DataFrame(rows)
    if args.format == "json":
        text = json.dumps(rows, indent=1, default=str)
    elif args.format == "csv":
        text = frame.to_csv(index=False)
    else:
        frame.to_parquet(args.output, index=False)
        text = None
    if text is not None:
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            print(text)
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(f"dumpkit: {r['path']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args) -> int:
    from dumpkit.report import render_report

    out = render_report(args.source, args.output, notebook=args.notebook, capture_log=args.capture_log,
                        debuginfo=args.debuginfo)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dumpkit", description="Which PCIe endpoints were still doing DMA "
                                 "when the kernel died, and what that did to the kdump kernel.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debuginfo", metavar="PATH", help="vmlinux (or .debug) of the dumped kernel; default: "
                    "the sample-dumps manifest for its build-id, else drgn's standard search")
    ap.add_argument("--vmcoreinfo", metavar="FILE",
                    help="VMCOREINFO text to use instead of the dump's (QEMU dump of a capture kernel)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="kernel, crash and kdump facts of a dump", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sha256", action="store_true", help="also hash the dump file (reads all of it)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("pci", help="the PCI tree with DMA-relevant state", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--tree", action="store_true", help="tree text (default)")
    fmt.add_argument("--json", action="store_true", help="JSON")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per function")
    p.set_defaults(func=cmd_pci)

    p = sub.add_parser("dmar", help="Intel VT-d units, context entries, mappings, and fault records", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("--log", action="append", metavar="FILE",
                   help="a text log to read faults from (capture kernel dmesg, vmcore-dmesg.txt, serial "
                        "console); repeatable. Default: such a log beside the dump, if any")
    p.add_argument("--no-auto-log", action="store_true", help="do not look for a capture log beside the dump")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_dmar)

    p = sub.add_parser("verdict", help="per endpoint: could it DMA, did it after the crash, did it hit the "
                       "capture kernel, did a reset stop it", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="the crashed (first) kernel's dump")
    p.add_argument("--capture-log", action="append", metavar="FILE",
                   help="the capture kernel's log; default: capture-dmesg.txt/vmcore-dmesg.txt beside the dump")
    p.add_argument("--capture-dump", metavar="FILE", help="a dump of the running capture kernel (copied tables)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verdict)

    p = sub.add_parser("compare", help="verdicts of two dumps side by side (before/after a patch)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("triage", help="many dumps into one table, each in its own worker", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="dump files or directories to search for dumps")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per dump (default 300)")
    p.add_argument("--format", choices=["json", "csv", "parquet"], default="csv")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_triage)

    p = sub.add_parser("report", help="run a notebook on a dump and write HTML with provenance", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("--capture-log", metavar="FILE")
    p.add_argument("--notebook", default="02-dma-at-crash-before-after",
                   help="notebook name in notebooks/ (default 02-dma-at-crash-before-after)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DumpkitError as e:
        print(f"dumpkit: error: {e}", file=sys.stderr)
        return e.exit_code
    except (drgn.FaultError, LookupError, AttributeError, OSError) as e:
        # reading kernel data through drgn failed somewhere no collector expected it:
        # one line for the user; DUMPKIT_DEBUG=1 shows the traceback
        import os

        if os.environ.get("DUMPKIT_DEBUG"):
            raise
        print(f"dumpkit: error: reading the kernel's data failed ({type(e).__name__}: {e}); the dump may be "
              "incomplete or from a kernel dumpkit does not know (DUMPKIT_DEBUG=1 for details)", file=sys.stderr)
        return AnalysisError.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
