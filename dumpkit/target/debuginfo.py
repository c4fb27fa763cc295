"""Debug info for a dumped kernel and its loaded modules, the way users have it.

``--debuginfo`` paths may be files (a vmlinux, module ``.ko``/``.ko.debug`` files) or
directories (``/usr/lib/debug``, an unpacked ``-dbg``/``-debuginfo``/ddeb package, a
build tree). Files are matched to the kernel and to each loaded module by build-id: drgn
checks it when a file is tried for a module (:meth:`drgn.Module.try_file`). Without
paths: drgn's standard search (``/usr/lib/debug``, ``.build-id`` links, ``/boot``,
``/lib/modules``), then the sample-dumps manifest. debuginfod only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import drgn

from dumpkit.errors import DebugInfoError
from dumpkit.target.corefile import elf_build_id

__all__ = [
    "DebugFile",
    "KernelModule",
    "check_debug_file",
    "debug_package_hint",
    "find_manifest_debug_file",
    "load_kernel_debug_info",
    "module_debug_status",
]

PACKAGED_SAMPLES = Path(__file__).resolve().parents[2] / "sample-dumps"
# bounds for walking a user's directory: an unpacked -dbg package has ~5,000 files
MAX_WALK_ENTRIES = 500_000
MAX_WALK_DEPTH = 24
DEBUG_SUFFIXES = (".ko", ".ko.debug", ".debug", ".ko.xz", ".ko.zst", ".ko.gz")


def _samples_dir() -> Path | None:
    """sample-dumps/ of this checkout; DUMPKIT_SAMPLES overrides ("" turns it off)."""
    env = os.environ.get("DUMPKIT_SAMPLES")
    if env is not None:
        return Path(env) if env else None
    return PACKAGED_SAMPLES


def _cache_samples() -> list[Path]:
    """Sample scenarios generated into the cache (~/.cache/dumpkit/samples/*)."""
    root = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit") / "samples"
    try:
        return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    except OSError:
        return []


@dataclass(frozen=True)
class DebugFile:
    """The debug file chosen for the kernel image (vmlinux).

    :param origin: ``"explicit"``, ``"sample-dumps manifest"`` or ``"drgn standard search"``
    """

    path: str | None
    build_id: str | None
    origin: str


@dataclass(frozen=True)
class KernelModule:
    """A loadable module of the dumped kernel and whether its debug info was found.

    :param status: ``"debug info loaded"`` or ``"no debug info"``
    :param reason: why not, with what to install or pass, when status says so
    """

    name: str
    address: int | None
    size: int | None
    build_id: str | None
    debug_file: str | None
    status: str
    reason: str | None = None


def debug_package_hint(release: str | None) -> str:
    """What a user installs to get debug info for ``release``, by distribution naming."""
    r = release or "RELEASE"
    if re.search(r"\.el\d+|\.fc\d+|\.oe\d+|\.an\d+|uek", r):
        return f"install kernel-debuginfo-{r} (kernel-uek-debuginfo for UEK)"
    if re.search(r"-(generic|lowlatency|aws|azure|gcp|oracle|kvm)(-\w+)?$", r):
        return f"install linux-image-unsigned-{r}-dbgsym from the ddebs archive"
    if re.search(r"-(amd64|arm64|cloud-amd64|rt-amd64|cloud-arm64|686|686-pae)$", r):
        return f"install linux-image-{r}-dbg"
    return f"install the debug info package of kernel {r}"


def _manifests_near(dump_path: Path | None) -> list[Path]:
    found = []
    if dump_path is not None:
        for parent in list(dump_path.resolve().parents)[:4]:
            if (parent / "manifest.json").is_file():
                found.append(parent / "manifest.json")
    samples = _samples_dir()
    if samples is not None:
        if (samples / "manifest.json").is_file():
            found.append(samples / "manifest.json")
        found += [p / "manifest.json" for p in _cache_samples()]
    return found


def find_manifest_debug_file(build_id: str | None, dump_path: Path | None) -> tuple[DebugFile, list[str]] | None:
    """The debug file (and debug directories) a sample-dumps manifest lists for this build-id.

    :param build_id: the kernel's build-id from VMCOREINFO, or None if unknown
    :param dump_path: where the dump is; manifests beside it are searched first
    :return: the vmlinux and the directories holding module debug files, or None
    """
    if not build_id:
        return None
    for manifest in _manifests_near(dump_path):
        try:
            kernel = json.loads(manifest.read_text()).get("kernel", {})
        except (OSError, ValueError):
            continue
        if kernel.get("build_id") == build_id:
            path = (manifest.parent / kernel["debug_file"]).resolve()
            if path.is_file():
                dirs = [str((manifest.parent / kernel["debug_dir"]).resolve())] if kernel.get("debug_dir") else []
                return DebugFile(str(path), build_id, "sample-dumps manifest"), dirs
    return None


def check_debug_file(path: str | os.PathLike, kernel_build_id: str | None) -> DebugFile:
    """Check an explicitly given kernel debug file against the kernel's build-id.

    :raises DebugInfoError: missing, not ELF, without build-id, or built for another kernel
    """
    p = Path(path)
    file_id = _file_build_id(p)
    if kernel_build_id and file_id != kernel_build_id:
        raise DebugInfoError(f"debug file {p} is for build-id {file_id}, the dumped kernel is {kernel_build_id}",
                             "pass the vmlinux built with that kernel")
    return DebugFile(str(p), file_id, "explicit")


def _file_build_id(p: Path) -> str:
    if not p.is_file():
        raise DebugInfoError(f"debug file {p} does not exist", "pass the vmlinux of the dumped kernel")
    try:
        with open(p, "rb") as f:
            is_elf = f.read(4) == b"\x7fELF"
        file_id = elf_build_id(p) if is_elf else None
    except OSError as e:
        raise DebugInfoError(f"debug file {p} cannot be read: {e.strerror}", "check its permissions") from None
    except Exception:
        raise DebugInfoError(f"debug file {p} is a damaged ELF file", "pass vmlinux or its .debug file") from None
    if not is_elf:
        raise DebugInfoError(f"debug file {p} is not an ELF file", "pass vmlinux or its .debug file")
    if not file_id:
        raise DebugInfoError(f"debug file {p} has no build-id, so it cannot be matched to the kernel",
                             "pass the distribution's debug file, which carries the build-id")
    return file_id


def _is_vmlinux(name: str) -> bool:
    return name.startswith("vmlinux")


def _module_key(name: str) -> str | None:
    """Module name a debug file's name stands for ("nvme-core.ko.debug" -> "nvme_core")."""
    for suffix in DEBUG_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("-", "_")
    return None


@dataclass
class _Candidates:
    vmlinux: list[str]
    modules: dict[str, list[str]]
    directories: list[str]


def _collect(paths: Sequence[str]) -> _Candidates:
    """Files named like kernel or module debug files under the given paths (bounded walk)."""
    cands = _Candidates([], {}, [])
    seen: set[str] = set()

    def add(path: str, name: str, explicit: bool) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        key = _module_key(name)
        # a file given by name is offered as the kernel's too unless it is named like a
        # module (".ko…"): drgn takes it only if its build-id is the kernel's
        if _is_vmlinux(name) or (explicit and (key is None or ".ko" not in name)):
            cands.vmlinux.append(real)
        if key is not None and not _is_vmlinux(name):
            cands.modules.setdefault(key, []).append(real)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DebugInfoError(f"debug info path {p} does not exist",
                                 "pass a vmlinux, module debug files or an unpacked debug package")
        if p.is_file():
            _file_build_id(p)  # explicit files must be ELF with a build-id
            add(str(p), p.name, explicit=True)
            continue
        if not os.access(p, os.R_OK | os.X_OK):
            raise DebugInfoError(f"debug info directory {p} cannot be read", "check its permissions")
        # drgn's own search (build-id links, boot/vmlinux-R, lib/modules/R) under the tree
        for sub in (p / "usr" / "lib" / "debug", p):
            if sub.is_dir():
                cands.directories.append(str(sub.resolve()))
        entries = 0
        root_depth = str(p).rstrip("/").count("/")
        for dirpath, dirnames, filenames in os.walk(p, onerror=lambda e: None):
            if dirpath.count("/") - root_depth >= MAX_WALK_DEPTH:
                dirnames[:] = []
            dirnames[:] = [d for d in dirnames if d != ".build-id"]
            for name in filenames:
                entries += 1
                if _is_vmlinux(name) or _module_key(name) is not None:
                    add(os.path.join(dirpath, name), name, explicit=False)
            entries += len(dirnames)
            if entries > MAX_WALK_ENTRIES:
                raise DebugInfoError(f"debug info directory {p} holds more than {MAX_WALK_ENTRIES} entries",
                                     "pass the unpacked debug package or its usr/lib/debug, not a whole disk")
    return cands


def _quiet_drgn():
    """drgn logs "missing debugging symbols" warnings; dumpkit reports them itself."""
    drgn_log = logging.getLogger("drgn")
    level = drgn_log.level
    drgn_log.setLevel(logging.CRITICAL)
    return lambda: drgn_log.setLevel(level)


def _configure_search(prog: drgn.Program, directories: Iterable[str], debuginfod: bool) -> None:
    finders = [f for f in prog.registered_debug_info_finders() if debuginfod or f != "debuginfod"]
    prog.set_enabled_debug_info_finders([f for f in finders if f in prog.registered_debug_info_finders()])
    dirs = list(dict.fromkeys([*directories, *prog.debug_info_options.directories]))
    prog.debug_info_options.directories = dirs


# drgn raises a plain Exception for what elfutils finds wrong in a debug file
_ELF_ERRORS = ("libelf error", "libdw error", "libdwfl error", "invalid DWARF", "invalid ELF",
               "ELF file", "debug_info", "decompress")


def _is_elf_error(e: Exception) -> bool:
    """An error of the debug file itself: drgn's BadDataError (bad DWARF), or the plain
    Exception it raises for libelf/libdw failures."""
    bad_data = getattr(drgn, "BadDataError", None)
    if bad_data is not None and isinstance(e, bad_data):
        return True
    return type(e) is Exception and any(word in str(e) for word in _ELF_ERRORS)


def _try(prog: drgn.Program, files: list[str], damaged: dict[str, str] | None = None, **kw) -> None:
    """Load debug info from ``files``; a file elfutils cannot read is recorded in
    ``damaged`` (path -> error) and skipped, the others still loaded."""
    try:
        prog.load_debug_info(files, **kw)
    except drgn.MissingDebugInfoError:
        pass  # reported per module below
    except Exception as e:  # noqa: BLE001 -- drgn's libelf/libdw errors are plain Exceptions
        if not _is_elf_error(e):
            raise
        if len(files) > 1:          # find which file it was, load the rest
            for f in files:
                _try(prog, [f], damaged, **kw)
        elif damaged is not None:
            damaged[files[0] if files else "a file drgn's standard search found"] = str(e)


class DamagedDebugFile(DebugInfoError):
    """A module debug file drgn could load but not index: the program that indexed it is
    unusable (every later lookup fails the same way), so the caller opens the dump again
    without that file (``path``)."""

    def __init__(self, path: str, why: str):
        super().__init__(f"debug file {path} cannot be read ({why})", "copy or unpack it again")
        self.path = path
        self.why = why


def _index_now(prog: drgn.Program) -> Exception | None:
    """drgn indexes a debug file's DWARF on the first lookup, not when it loads it: look
    something up now. :return: the error of a debug file it could not read, or None."""
    try:
        prog.type("struct list_head")
    except LookupError:
        pass
    except Exception as e:  # noqa: BLE001 -- drgn's libelf/libdw errors are plain Exceptions
        if not _is_elf_error(e):
            raise
        return e
    return None


def _probe_debug_info(prog: drgn.Program, path: str | None) -> None:
    """A damaged kernel debug file is named here instead of failing at some later lookup."""
    e = _index_now(prog)
    if e is not None:
        raise DebugInfoError(f"debug file {path} is for this kernel but its debug info cannot be read ({e})",
                             "it is damaged: copy or unpack it again")


def _probe_modules(prog: drgn.Program, files: list[str]) -> None:
    """Index the module debug files just loaded; one it cannot read is named
    (:class:`DamagedDebugFile`)."""
    e = _index_now(prog)
    if e is None:
        return
    # drgn's message starts with the file's path; elfutils' may name none
    path = next((f for f in files if str(e).startswith(f)), files[0] if len(files) == 1 else None)
    if path is None:
        raise DebugInfoError(f"a module debug file cannot be read ({e})",
                             "pass the module debug files one by one to find it, or unpack them again")
    raise DamagedDebugFile(path, str(e).removeprefix(f"{path}: "))


def _damaged_kernel_file(damaged: dict[str, str], build_id: str | None) -> DebugInfoError | None:
    """The error for a debug file of this kernel (by build-id) that could not be read."""
    for path, why in damaged.items():
        if build_id is None or not os.path.isfile(path) or _file_build_id(Path(path)) == build_id:
            return DebugInfoError(f"debug file {path} is for this kernel but cannot be read ({why})",
                                  "it is damaged: copy or unpack it again")
    return None


def load_kernel_debug_info(prog: drgn.Program, paths: Sequence[str] | None, build_id: str | None,
                           release: str | None, dump_path: Path | None,
                           debuginfod: bool = False,
                           excluded: dict[str, str] | None = None) -> tuple[DebugFile, list[KernelModule]]:
    """Load debug info for the kernel image and every loaded module.

    :param paths: ``--debuginfo`` files and directories; None or empty for the defaults
    :param build_id: the kernel's build-id from VMCOREINFO, if known
    :param excluded: module debug files found damaged before (path -> why): not loaded,
        and named as the reason their modules have no debug info
    :raises DamagedDebugFile: a module debug file could not be indexed; open the dump
        again with it in ``excluded``
    :raises DebugInfoError: no debug info for the kernel image itself (modules missing
        debug info are reported in the returned list, not raised)
    """
    restore = _quiet_drgn()
    try:
        paths = [str(p) for p in (paths or [])]
        cands = _collect(paths) if paths else _Candidates([], {}, [])
        origin = "explicit"
        if not paths:
            cands.directories = []
        _configure_search(prog, cands.directories, debuginfod)
        main = _main_module(prog)
        damaged: dict[str, str] = {}
        if paths:
            _try(prog, cands.vmlinux, damaged)
            if main.wants_debug_file():
                # another vmlinux among the paths? say which build-id it has
                for path in cands.vmlinux:
                    other = _file_build_id(Path(path))
                    if other == build_id and path not in damaged:
                        damaged[path] = "drgn found no usable debug info in it"
                    if build_id and other != build_id:
                        raise DebugInfoError(f"debug file {path} is for build-id {other}, the dumped kernel "
                                             f"is {build_id}", "pass the vmlinux built with that kernel")
                _try(prog, [], damaged, main=True)
                origin = "drgn standard search"
        else:
            _try(prog, [], damaged, main=True)
            origin = "drgn standard search"
            if main.wants_debug_file():
                found = find_manifest_debug_file(build_id, dump_path)
                if found is not None:
                    chosen, dirs = found
                    _try(prog, [chosen.path], damaged)
                    cands = _collect(dirs) if dirs else cands
                    _configure_search(prog, cands.directories, debuginfod)
                    origin = chosen.origin
        if main.wants_debug_file():
            bad = _damaged_kernel_file(damaged, build_id)
            if bad is not None:
                raise bad
            raise DebugInfoError(f"no debug info found for kernel {release or '?'} (build-id "
                                 f"{build_id or 'unknown'})",
                                 f"pass its vmlinux with --debuginfo PATH ({debug_package_hint(release)})")
        chosen = DebugFile(main.debug_file_path, build_id or _safe_build_id(main), origin)
        _probe_debug_info(prog, main.debug_file_path)
        modules = _load_modules(prog, cands, release, excluded or {})
        return chosen, modules
    finally:
        restore()


def _main_module(prog: drgn.Program) -> drgn.MainModule:
    """The kernel image's module, created the way drgn's loaded-module walk creates it
    (with its build-id and address range from the dump)."""
    try:
        return prog.main_module()
    except LookupError:
        pass
    for m, _new in prog.loaded_modules():
        if isinstance(m, drgn.MainModule):
            return m
        break
    raise DebugInfoError("the dump does not describe its kernel image (no VMCOREINFO)",
                         "check that the file is a kernel dump")


def _text_address(m: drgn.Module, ranges) -> int | None:
    """Where a module's text starts, the address /proc/modules and crash's ``mod`` print
    (``mem[MOD_TEXT].base``). Not the lowest of its ranges: since the ROX execmem cache
    (6.14, CONFIG_ARCH_HAS_EXECMEM_ROX on x86_64) a module's text lies apart from, and can
    lie above, its data."""
    try:
        text = m.section_addresses.get(".text")
    except (AttributeError, ValueError):
        text = None
    return text if text is not None else min((r[0] for r in ranges), default=None)


def _safe_build_id(module: drgn.Module) -> str | None:
    return module.build_id.hex() if module.build_id else None


def _load_modules(prog: drgn.Program, cands: _Candidates, release: str | None,
                  excluded: dict[str, str]) -> list[KernelModule]:
    try:
        loaded = [m for m, _new in prog.loaded_modules() if isinstance(m, drgn.RelocatableModule)]
    except (drgn.FaultError, LookupError, ValueError) as e:
        prog.cache["dumpkit.modules.error"] = f"module list unreadable ({e})"
        return []
    wanted = [m for m in loaded if m.wants_debug_file()]
    files = [f for m in wanted for f in cands.modules.get(m.name.replace("-", "_"), [])]
    damaged = {f: excluded[f] for f in files if f in excluded}
    files = [f for f in files if f not in damaged]
    if files:
        _try(prog, files, damaged)
        new = [f for f in files if f in damaged]
        if new:         # drgn indexed it while loading: this program is unusable now
            raise DamagedDebugFile(new[0], damaged[new[0]].removeprefix(f"{new[0]}: "))
        _probe_modules(prog, files)
    still = [m for m in wanted if m.wants_debug_file()]
    if still:
        try:
            prog.find_standard_debug_info(still)
        except (drgn.MissingDebugInfoError, OSError, ValueError):
            pass
    out = []
    for m in loaded:
        ranges = m.address_ranges or ()
        start = _text_address(m, ranges)
        size = sum(r[1] - r[0] for r in ranges) if ranges else None
        bad = [p for p in cands.modules.get(m.name.replace("-", "_"), []) if p in damaged]
        if m.wants_debug_file() and bad:
            status, reason = "no debug info", (f"no debug info for module {m.name}: {bad[0]} cannot be read "
                                               f"({damaged[bad[0]]}); copy or unpack it again")
        elif m.wants_debug_file():
            status, reason = "no debug info", (f"no debug info for module {m.name} ({debug_package_hint(release)} "
                                               f"or pass its .ko.debug with --debuginfo)")
        else:
            status, reason = "debug info loaded", None
        out.append(KernelModule(m.name, start, size, _safe_build_id(m), m.debug_file_path, status, reason))
    broken = _module_list_break(prog)
    if broken:
        prog.cache["dumpkit.modules.error"] = broken
        # shown among the modules: those after the break are missing from this list
        out.append(KernelModule("(list cut)", None, None, None, None, "unreadable",
                                f"{broken}; modules after it are not listed"))
    prog.cache["dumpkit.modules"] = {k.name: k for k in out}
    return out


def _module_list_break(prog: drgn.Program) -> str | None:
    """Where the kernel's module list cannot be followed (drgn stops there silently), or
    None when it reads whole."""
    from dumpkit.target.walk import ListCorrupt, bounded_list

    try:
        head = prog["modules"]
    except KeyError:
        return None
    try:
        for _ in bounded_list(head.address_of_(), "struct module", "list", "the module list", 1 << 14):
            pass
    except ListCorrupt as e:
        return str(e)
    except LookupError:
        return None
    return None


def module_debug_status(prog: drgn.Program, name: str) -> str | None:
    """Why a module's types are unavailable, or None when they are (loaded with debug
    info, or built into the kernel image, or not a module dumpkit was told about).

    :param name: module name as the kernel has it (``e1000e``, ``nvme``, ``virtio_ring``)
    """
    modules = prog.cache.get("dumpkit.modules")
    if modules is None:
        return None
    m = modules.get(name) or modules.get(name.replace("-", "_"))
    broken = prog.cache.get("dumpkit.modules.error")
    if m is None and broken:
        return f"module {name} not found and the module list is cut ({broken})"
    return m.reason if m is not None and m.status != "debug info loaded" else None
