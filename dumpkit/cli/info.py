"""dumpkit info: the kernel, crash and kdump facts of a dump, and its modules."""

from __future__ import annotations

import dataclasses

from dumpkit.cli.output import Records, add_format, emit, plain, render
from dumpkit.cli.shared import SOURCE_HELP, check_vmcoreinfo, kernel_data, open_dump
from dumpkit.target.pagemap import level_words

NAME = "info"
HELP = "kernel, crash and kdump facts of a dump, and its modules"
EXAMPLES = ["dumpkit info sample-dumps/nocopy-fault/vmcore.kdump",
            "dumpkit info DUMP --json --sha256",
            "dumpkit info /var/crash/127.0.0.1-2026-11-23/vmcore --debuginfo /usr/lib/debug"]
GLOBALS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")

# the kdump or info field whose unknown reason a line gives
_REASON_KEYS = {"crash time": "crash_time", "panic": "panic_message", "crashed task": "crashed_task",
                "uptime": "uptime_s", "command line": "command_line", "capture kernel": "capture_kernel",
                "reset_devices": "reset_devices", "crash kernel loaded": "crash_kernel_loaded",
                "crash kernel cmdline": "crash_kernel_cmdline", "crash kernel call": "crash_kernel_loaded",
                "crash memory": "crash_kernel_reserved", "crash image segments": "crash_kernel_loaded",
                "dump level": "dump_level"}


def add_arguments(p) -> None:
    p.add_argument("source", help=SOURCE_HELP)
    add_format(p, InfoRecords.formats(), helps={"--json": "machine-readable output"})
    p.add_argument("--sha256", action="store_true", help="also hash the dump file (reads all of it)")


def info_lines(dump) -> list[str]:
    info = dump.info
    kd = dump.kdump()
    rows = [
        ("source", info.source),
        ("format", info.format),
        ("dump level", f"{info.dump_level} ({level_words(info.dump_level)})" if info.dump_level is not None else None),
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
        *([("crash CMA ranges", ", ".join(f"{a:#x}-{b:#x}" for a, b in kd.crash_kernel_cma)
            + " (crashkernel=,cma: lent to movable pages, not in the vmcore)"
            + (f"; {kd.crash_kernel_cma_pinned} pages of them pinned for DMA at the crash (at least)"
               if kd.crash_kernel_cma_pinned else ""))] if kd.crash_kernel_cma else []),
        ("crash image segments", ", ".join(f"{m:#x}+{n:#x}" for m, n in kd.crash_kernel_segments) or None),
    ]
    reasons = {**info.unknown, **{k: v for k, v in kd.unknown.items()}}
    lines = []
    for label, value in rows:
        if value is None:
            value = f"unknown ({reasons.get(_REASON_KEYS.get(label, ''), 'not recorded')})"
        lines.append(f"{label + ':':22}{value}")
    if info.crash_stack:
        lines.append(f"{'crash stack:':22}" + " <- ".join(info.crash_stack[:12]))
    return lines


def module_lines(modules: list) -> list[str]:
    """The module table of ``info``; an entry with status "unreadable" is where the dump's
    module list could not be followed: a line of its own, not counted as a module."""
    cuts = [m for m in modules if m.status == "unreadable"]
    mods = [m for m in modules if m not in cuts]
    loaded = sum(1 for m in mods if m.debug_file)
    lines = [f"{'modules:':22}" + (f"{len(mods)} loaded, debug info for {loaded}" if mods else "none loaded")
             + (" (the list is cut: more may be loaded)" if cuts else "")]
    for m in mods:
        where = f"{m.address:#x}" if isinstance(m.address, int) else "-"
        lines.append(f"  {m.name:24} {where:18} {m.build_id or '-':40}  {m.debug_file or m.reason or m.status}")
    lines += [f"  module list cut: {m.reason or m.name}" for m in cuts]
    return lines


@dataclasses.dataclass
class InfoRecords(Records):
    dump: object
    modules: list
    sha256: bool

    def text(self) -> str:
        lines = info_lines(self.dump)
        if self.sha256:
            lines.append(f"{'sha256:':22}{self.dump.sha256()}")
        lines += module_lines(self.modules)
        return "\n".join(lines)

    def data(self) -> dict:
        out = {"info": plain(self.dump.info), "kdump": plain(self.dump.kdump())}
        if self.sha256:
            out["info"]["sha256"] = self.dump.sha256()
        out["modules"] = [plain(m) for m in self.modules]
        return out


def run(args) -> int:
    check_vmcoreinfo(args)
    with kernel_data(args.source):
        dump = open_dump(args)
        text = render(InfoRecords(dump, dump.modules(), args.sha256), args.format)
    emit(text)
    return 0
