"""An opened target and its metadata."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import drgn

from dumpkit.files import file_sha256
from dumpkit.target.corefile import CoreFile
from dumpkit.target.debuginfo import DebugFile, KernelModule

__all__ = ["Dump", "DumpInfo", "vmcoreinfo_fields"]


@dataclass(frozen=True)
class DumpInfo:
    """What a user asks first about a dump. Fields that cannot be known are None,
    with the reason in ``unknown``."""

    source: str
    live: bool
    format: str
    kernel_release: str | None
    build_id: str | None
    arch: str | None
    debug_file: str | None
    debug_file_origin: str
    crash_time: datetime.datetime | None
    panic_message: str | None
    crashed_task: str | None
    crash_stack: tuple[str, ...]
    uptime_s: float | None
    command_line: str | None
    # makedumpfile's -d, from a kdump-compressed file's sub-header
    dump_level: int | None = None
    unknown: dict[str, str] = field(default_factory=dict)


def vmcoreinfo_fields(prog: drgn.Program) -> dict[str, str]:
    """The KEY=value lines of the VMCOREINFO drgn uses for this program.

    :return: empty if the program has none (a live kernel without the note)
    """
    try:
        text = prog["VMCOREINFO"].string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _frame_name(frame: drgn.StackFrame) -> str:
    name = frame.name
    if name:
        return name
    try:
        return hex(frame.pc)
    except LookupError:
        return "?"


class Dump:
    """A kernel opened for analysis: a vmcore, /proc/kcore or a QEMU guest over QMP.

    Collections (PCI tree, kdump state) are computed once and cached; they hold plain
    data, never drgn objects. ``prog`` is the drgn program for anything else.
    """

    def __init__(self, prog: drgn.Program, source: str, kind: str, corefile: CoreFile | None,
                 debug: DebugFile, modules: list[KernelModule] | None = None):
        self.prog = prog
        self.source = source
        self.kind = kind
        self.corefile = corefile
        self.debug = debug
        self._modules = list(modules or [])
        self._cache: dict[str, object] = {}

    def modules(self) -> list[KernelModule]:
        """The kernel's loaded modules (name, address, build-id) and whether debug info
        was found for each; empty for a kernel without loadable modules."""
        return list(self._modules)

    @property
    def live(self) -> bool:
        return self.kind in ("live", "qmp")

    @property
    def path(self) -> Path | None:
        return self.corefile.path if self.corefile else None

    def sha256(self) -> str | None:
        """SHA-256 of the dump file, computed on first use (dumps can be large).

        :return: hex digest, or None for live targets
        """
        if self.path is None:
            return None
        if "sha256" not in self._cache:
            self._cache["sha256"] = file_sha256(self.path)
        return self._cache["sha256"]  # type: ignore[return-value]

    def pci(self):
        """The PCI tree (collected once). :return: :class:`dumpkit.pci.PciTree`"""
        if "pci" not in self._cache:
            from dumpkit.pci import collect_pci

            self._cache["pci"] = collect_pci(self.prog)
        return self._cache["pci"]

    def kdump(self):
        """kdump state (collected once). :return: :class:`dumpkit.kdump.KdumpState`"""
        if "kdump" not in self._cache:
            from dumpkit.kdump import collect_kdump

            self._cache["kdump"] = collect_kdump(self.prog)
        return self._cache["kdump"]

    @cached_property
    def vmcoreinfo(self) -> dict[str, str]:
        return vmcoreinfo_fields(self.prog)

    @cached_property
    def info(self) -> DumpInfo:
        prog, unknown = self.prog, {}
        vmci = self.vmcoreinfo

        def attempt(name, fn, reason_if_none=None):
            try:
                value = fn()
            except (drgn.FaultError, LookupError, ValueError, drgn.ObjectAbsentError, AttributeError) as e:
                unknown[name] = f"{type(e).__name__}: {e}"
                return None
            if value is None and reason_if_none:
                unknown[name] = reason_if_none
            return value

        release = attempt("kernel_release", lambda: prog["UTS_RELEASE"].string_().decode())
        crash_time = None
        if "CRASHTIME" in vmci:
            crash_time = datetime.datetime.fromtimestamp(int(vmci["CRASHTIME"]), datetime.UTC)
        else:
            unknown["crash_time"] = "live target" if self.live else "VMCOREINFO has no CRASHTIME"
        panic = stack = task = None
        if self.live:
            unknown.update(panic_message="live target", crashed_task="live target")
        else:
            from drgn.helpers.linux.panic import panic_message

            panic = attempt("panic_message", lambda: (panic_message(prog) or b"").decode(errors="replace")
                            or None, "no panic message in the log")
            thread = attempt("crashed_task", prog.crashed_thread)
            if thread is not None:
                t = thread.object
                task = attempt("crashed_task", lambda: f"{t.comm.string_().decode()} (pid {t.pid.value_()})")
                stack = attempt("crash_stack", lambda: tuple(_frame_name(f) for f in thread.stack_trace()))
        from drgn.helpers.linux.timekeeping import uptime

        from dumpkit.target.pagemap import dump_level

        level, why = dump_level(self.corefile) if not self.live else (None, "live target")
        if why:
            unknown["dump_level"] = why

        return DumpInfo(
            source=self.source,
            live=self.live,
            format=self.corefile.format if self.corefile else self.kind,
            kernel_release=release,
            build_id=vmci.get("BUILD-ID") or self.debug.build_id,
            arch=prog.platform.arch.name.lower() if prog.platform else None,
            debug_file=self.debug.path,
            debug_file_origin=self.debug.origin,
            crash_time=crash_time,
            panic_message=panic,
            crashed_task=task,
            crash_stack=stack or (),
            uptime_s=attempt("uptime_s", lambda: round(uptime(prog), 3)),
            command_line=attempt("command_line", lambda: prog["saved_command_line"].string_().decode()),
            dump_level=level,
            unknown=unknown,
        )
