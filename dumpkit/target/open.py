"""dumpkit.open(): a vmcore path, "live" (/proc/kcore) or "qmp:SOCKET"."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import drgn

from dumpkit.errors import AccessError, ConnectionFailed, DebugInfoError, DumpkitError, InputError
from dumpkit.target.corefile import CoreFile, inspect_core_file, read_vmcoreinfo_file
from dumpkit.target.debuginfo import DamagedDebugFile, DebugFile, KernelModule, load_kernel_debug_info
from dumpkit.target.dump import Dump, vmcoreinfo_fields
from dumpkit.target.pagemap import attach_dump_pages

__all__ = ["KCORE", "open_target"]

KCORE = Path("/proc/kcore")

PLATFORMS = {
    "x86_64": drgn.Platform(drgn.Architecture.X86_64,
                            drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN),
    "aarch64": drgn.Platform(drgn.Architecture.AARCH64,
                             drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN),
}


def _attach_file(source: str, vmcoreinfo: str | None) -> tuple[drgn.Program, CoreFile]:
    core = inspect_core_file(source)
    # QEMU's kdump header names no architecture libkdumpfile knows; the utsname does
    prog = drgn.Program(PLATFORMS.get(core.arch or ""), vmcoreinfo=vmcoreinfo)
    try:
        prog.set_core_dump(str(core.path))
    except PermissionError:
        raise AccessError(f"{source}: permission denied", "make it readable") from None
    except Exception as e:  # libkdumpfile raises plain Exception
        raise InputError(f"{source} could not be opened as a kernel dump: {e}",
                         "check that it is a complete vmcore") from None
    return prog, core


def _attach_live() -> drgn.Program:
    if not KCORE.exists():
        raise InputError(f"{KCORE} does not exist (kernel without CONFIG_PROC_KCORE, or a container)",
                         "analyse a vmcore instead, or run on the host")
    if not os.access(KCORE, os.R_OK):
        raise AccessError("reading /proc/kcore needs root", "run dumpkit with sudo")
    prog = drgn.Program()
    try:
        prog.set_kernel()
    except PermissionError:
        raise AccessError("reading /proc/kcore needs root", "run dumpkit with sudo") from None
    except (OSError, ValueError) as e:
        raise InputError(f"/proc/kcore could not be opened: {e}", "run on a Linux host as root") from None
    return prog


# how long a QEMU monitor may take to answer: a TCG guest on a busy host answers late
# (seen: > 5 s with two other guests running on 2 cores); DUMPKIT_QMP_TIMEOUT overrides
QMP_TIMEOUT = float(os.environ.get("DUMPKIT_QMP_TIMEOUT", "20"))


def _qmp_probe(path: Path, timeout: float) -> str | None:
    """Talk QMP ourselves first, with a time limit on every reply: greeting,
    ``qmp_capabilities``, ``query-status``. drgn's own client has no time limit and
    holds the interpreter while it waits, so a monitor that accepts and never answers
    would hang dumpkit. :return: why the monitor is unusable, or None"""
    import json
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            reader = s.makefile("rb")

            def reply() -> dict:
                while True:
                    line = reader.readline(1 << 20)
                    if not line:
                        raise ConnectionError("connection closed")
                    msg = json.loads(line)
                    if "event" not in msg:
                        return msg

            if "QMP" not in reply():
                return "no QMP greeting"
            for cmd in ("qmp_capabilities", "query-status"):
                s.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
                if "return" not in reply():
                    return f"QMP {cmd} failed"
        except TimeoutError:
            return f"no QMP answer within {timeout:.0f} s"
        except (OSError, ValueError) as e:
            return f"QMP conversation failed ({e})"
    return None


def _attach_qmp(socket_path: str) -> drgn.Program:
    p = Path(socket_path)
    if not p.exists():
        raise ConnectionFailed(f"QMP socket {p} does not exist",
                               "start QEMU with -qmp unix:PATH,server=on,wait=off and -device vmcoreinfo")
    if not stat.S_ISSOCK(p.stat().st_mode):
        raise ConnectionFailed(f"{p} is not a socket", "pass the path given to QEMU's -qmp unix:")
    problem = _qmp_probe(p, QMP_TIMEOUT)
    if problem:
        raise ConnectionFailed(f"{p}: {problem}",
                               "check that it is QEMU's -qmp socket, that the guest runs, and that no other "
                               "client holds the monitor")
    prog = drgn.Program()
    try:
        prog.set_qemu_qmp(str(p))
    except Exception as e:  # drgn reports connection and protocol errors as plain exceptions
        raise ConnectionFailed(f"QEMU at {p} did not answer over QMP: {e}",
                               "check that the guest runs with -device vmcoreinfo and a kernel "
                               "with CONFIG_FW_CFG_SYSFS") from None
    return prog


def _debuginfo_paths(debuginfo) -> list[str]:
    if debuginfo is None:
        return []
    if isinstance(debuginfo, (str, os.PathLike)):
        return [str(debuginfo)]
    return [str(p) for p in debuginfo]


def _load_debug_info(prog: drgn.Program, paths: list[str], dump_path: Path | None,
                     debuginfod: bool, excluded: dict[str, str] | None = None) -> tuple[DebugFile, list[KernelModule]]:
    vmci = vmcoreinfo_fields(prog)
    return load_kernel_debug_info(prog, paths, vmci.get("BUILD-ID"), vmci.get("OSRELEASE"), dump_path,
                                  debuginfod=debuginfod, excluded=excluded)


MAX_DAMAGED_FILES = 16    # a damaged module debug file costs one reopening of the dump


def _attach_with_debug_info(attach, paths: list[str], dump_path: Path | None, debuginfod: bool):
    """``attach()`` a new program and load its debug info; a module debug file that turns
    out unreadable leaves that program unusable, so attach again without it."""
    excluded: dict[str, str] = {}
    while True:
        prog, corefile = attach()
        try:
            return prog, corefile, _load_debug_info(prog, paths, dump_path, debuginfod, excluded)
        except DamagedDebugFile as e:
            if e.path in excluded or len(excluded) >= MAX_DAMAGED_FILES:
                raise
            excluded[e.path] = e.why


def open_target(source: str | os.PathLike,
                debuginfo: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                vmcoreinfo: str | os.PathLike | None = None, debuginfod: bool | None = None) -> Dump:
    """Open a kernel for analysis.

    :param source: a vmcore path (ELF or kdump-compressed), ``"live"`` for /proc/kcore,
        or ``"qmp:SOCKET"`` for a running QEMU guest
    :param debuginfo: debug info files and directories (a vmlinux, module ``.ko``/``.ko.debug``
        files, ``/usr/lib/debug`` or an unpacked debug package), matched by build-id;
        default: drgn's standard search, then the sample-dumps manifest
    :param debuginfod: also ask debuginfod servers (network); default: only when the
        environment sets ``DUMPKIT_DEBUGINFOD=1``
    :param vmcoreinfo: a VMCOREINFO text to use instead of the dump's own (for a QEMU
        dump of a capture kernel, whose header carries the crashed kernel's)
    :raises DumpkitError: with a one-line message and an exit code
    """
    source = str(source)
    corefile = None
    vmci_text = read_vmcoreinfo_file(vmcoreinfo) if vmcoreinfo else None
    if source == "live":
        attach, kind = lambda: (_attach_live(), None), "live"
    elif source.startswith("qmp:"):
        attach, kind = lambda: (_attach_qmp(source[4:]), None), "qmp"
    else:
        def attach():
            prog, core = _attach_file(source, vmci_text)
            attach_dump_pages(prog, core)
            return prog, core
        kind = "vmcore"
    if debuginfod is None:
        debuginfod = os.environ.get("DUMPKIT_DEBUGINFOD", "") not in ("", "0")
    dump_path = Path(source) if kind == "vmcore" else None
    prog, corefile, (debug, modules) = _attach_with_debug_info(attach, _debuginfo_paths(debuginfo), dump_path,
                                                               debuginfod)
    dump = Dump(prog, source, kind, corefile, debug, modules)
    try:
        release = dump.prog["UTS_RELEASE"].string_()
    except (drgn.FaultError, LookupError, AttributeError) as e:
        raise DumpkitError(f"{source}: kernel data unreadable with {debug.path}: {e}",
                           "check that the debug file and the dump belong together") from None
    if not release:
        raise DebugInfoError(f"{source}: empty kernel release", "check the debug file")
    return dump
