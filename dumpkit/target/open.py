"""dumpkit.open(): a vmcore path, "live" (/proc/kcore) or "qmp:SOCKET"."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import drgn

from dumpkit.errors import AccessError, ConnectionFailed, DebugInfoError, DumpkitError, InputError
from dumpkit.target.corefile import CoreFile, inspect_core_file
from dumpkit.target.debuginfo import DebugFile, check_debug_file, find_manifest_debug_file
from dumpkit.target.dump import Dump, vmcoreinfo_fields

__all__ = ["KCORE", "open_target"]

KCORE = Path("/proc/kcore")

PLATFORMS = {
    "x86_64": drgn.Platform(drgn.Architecture.X86_64,
                            drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN),
    "aarch64": drgn.Platform(drgn.Architecture.AARCH64,
                             drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN),
}


def _read_vmcoreinfo_file(path: str | os.PathLike) -> str:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"vmcoreinfo file {p}: {e.strerror}", "check the path") from None
    if "OSRELEASE=" not in text:
        raise InputError(f"{p} is not a VMCOREINFO text (no OSRELEASE= line)",
                         "pass the capture kernel's vmcoreinfo saved beside the dump")
    return text


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


def _attach_qmp(socket_path: str) -> drgn.Program:
    p = Path(socket_path)
    if not p.exists():
        raise ConnectionFailed(f"QMP socket {p} does not exist",
                               "start QEMU with -qmp unix:PATH,server=on,wait=off and -device vmcoreinfo")
    if not stat.S_ISSOCK(p.stat().st_mode):
        raise ConnectionFailed(f"{p} is not a socket", "pass the path given to QEMU's -qmp unix:")
    prog = drgn.Program()
    try:
        prog.set_qemu_qmp(str(p))
    except Exception as e:  # drgn reports connection and protocol errors as plain exceptions
        raise ConnectionFailed(f"QEMU at {p} did not answer over QMP: {e}",
                               "check that the guest runs with -device vmcoreinfo and a kernel "
                               "with CONFIG_FW_CFG_SYSFS") from None
    return prog


def _load_debug_info(prog: drgn.Program, debuginfo: str | None, dump_path: Path | None) -> DebugFile:
    build_id = vmcoreinfo_fields(prog).get("BUILD-ID")
    if debuginfo is not None:
        chosen = check_debug_file(debuginfo, build_id)
    else:
        chosen = find_manifest_debug_file(build_id, dump_path)
    if chosen is not None:
        try:
            prog.load_debug_info([chosen.path])
        except drgn.MissingDebugInfoError as e:
            raise DebugInfoError(f"{chosen.path} has no usable debug info for this kernel: {e}",
                                 "pass the vmlinux built with debug info (CONFIG_DEBUG_INFO)") from None
        return chosen
    # drgn's standard search, never the network
    prog.set_enabled_debug_info_finders(
        [f for f in prog.enabled_debug_info_finders() if f != "debuginfod"])
    drgn_log = logging.getLogger("drgn")
    level = drgn_log.level
    drgn_log.setLevel(logging.CRITICAL)  # its "missing debugging symbols" warning becomes our error
    try:
        prog.load_default_debug_info()
    except drgn.MissingDebugInfoError:
        pass
    finally:
        drgn_log.setLevel(level)
    main = prog.main_module()
    if main is None or main.debug_file_path is None:
        release = vmcoreinfo_fields(prog).get("OSRELEASE", "?")
        raise DebugInfoError(f"no debug info found for kernel {release} (build-id {build_id or 'unknown'})",
                             "pass its vmlinux with --debuginfo PATH")
    return DebugFile(main.debug_file_path, build_id, "drgn standard search")


def open_target(source: str | os.PathLike, debuginfo: str | os.PathLike | None = None,
                vmcoreinfo: str | os.PathLike | None = None) -> Dump:
    """Open a kernel for analysis.

    :param source: a vmcore path (ELF or kdump-compressed), ``"live"`` for /proc/kcore,
        or ``"qmp:SOCKET"`` for a running QEMU guest
    :param debuginfo: the kernel's debug file; default: the sample-dumps manifest entry
        for the kernel's build-id, else drgn's standard search (no network)
    :param vmcoreinfo: a VMCOREINFO text to use instead of the dump's own (for a QEMU
        dump of a capture kernel, whose header carries the crashed kernel's)
    :raises DumpkitError: with a one-line message and an exit code
    """
    source = str(source)
    corefile = None
    vmci_text = _read_vmcoreinfo_file(vmcoreinfo) if vmcoreinfo else None
    if source == "live":
        prog, kind = _attach_live(), "live"
    elif source.startswith("qmp:"):
        prog, kind = _attach_qmp(source[4:]), "qmp"
    else:
        prog, corefile = _attach_file(source, vmci_text)
        kind = "vmcore"
    debug = _load_debug_info(prog, str(debuginfo) if debuginfo else None, corefile.path if corefile else None)
    dump = Dump(prog, source, kind, corefile, debug)
    try:
        release = dump.prog["UTS_RELEASE"].string_()
    except (drgn.FaultError, LookupError, AttributeError) as e:
        raise DumpkitError(f"{source}: kernel data unreadable with {debug.path}: {e}",
                           "check that the debug file and the dump belong together") from None
    if not release:
        raise DebugInfoError(f"{source}: empty kernel release", "check the debug file")
    return dump
