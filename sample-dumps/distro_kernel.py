#!/usr/bin/env python3
"""Debian's stock kernel for the distro sample scenarios, fetched with apt, never built
or committed.

    sample-dumps/distro_kernel.py                  # the kernel linux-image-amd64 points at
    sample-dumps/distro_kernel.py --package linux-image-6.1.0-N-amd64
    sample-dumps/distro_kernel.py --suite trixie   # what that suite's linux-image-amd64 points at
    sample-dumps/distro_kernel.py --package linux-image-6.12.N+deb13-amd64   # found in trixie

A package the apt it runs with (the host's, or APT_CONFIG's) does not know is looked for in
the other Debian suites (SUITES) through a private apt configuration per suite under
~/.cache/dumpkit/apt/SUITE/ (the host's Debian sources with the suite renamed, own lists,
empty dpkg status, dpkg /bin/false: lists and downloads only, as kernel-patches/build's
for bookworm). A kernel from another suite gets that suite's makedumpfile for its guests
when it is newer than the host's (makedumpfile 1.7.2 of Debian 12 drops slab pages of
kernels >= 6.2), unpacked with its own C library and loader (GUEST_TOOLS).

Downloads the image package and its -dbg package into a cache once and keeps only what
the sample guests need: the vmlinuz, the modules they load (with their dependencies from
a modules.dep made by depmod) and, laid out like the unpacked -dbg package
(usr/lib/debug/boot/vmlinux-R, usr/lib/debug/lib/modules/R/kernel/...), the vmlinux and
the debug files of those modules. The .deb files are deleted afterwards. Prints the
kernel's cache directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DistroKernel", "fetch", "cache_root", "load_order", "builtin_modules", "GUEST_MODULES",
           "HW_MODULES", "VFIO_MODULES", "VM_MODULES", "CAPTURE_MODULES", "CACHED_MODULES", "SUITES", "GUEST_TOOLS"]

# What the sample guests load, by module name; dependencies are added from modules.dep.
# qemu_fw_cfg: the first kernel registers its VMCOREINFO with QEMU's vmcoreinfo device
# (a kdump kernel does not), which a QMP dump of the running capture kernel needs
GUEST_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "e1000e", "nvme", "virtio_net", "qemu_fw_cfg"]
# The hardware-load scenarios (hw-load, hw-idle) load these as well: the NICs and
# storage/USB controllers users run, the SCSI disk driver and USB mass storage.
HW_MODULES = ["e1000", "vmxnet3", "vmw_pvscsi", "megaraid_sas", "ahci", "sd_mod", "xhci_pci",
              "usb_storage"]
# The VFIO scenarios (vfio-copied, vfio-nocopy-fault) load these in the first kernel once
# the kernel's e1000e has had the NIC (guest/init: dumpkit.vfio): vfio-pci takes the NIC
# over for our userspace driver (guest/vfio-rx.c) and its type1 IOMMU backend maps the
# driver's memory; modules.dep adds vfio_virqfd, irqbypass, ...
VFIO_MODULES = ["vfio", "vfio_iommu_type1", "vfio_pci_core", "vfio_pci"]
# the VFIO VM scenario's host side: KVM on the (emulated) AMD CPU, with kvm, ccp and
# irqbypass from modules.dep; their debug files give dumpkit struct kvm
VM_MODULES = ["kvm_amd"]
CAPTURE_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
# What the cache keeps: every module some guest loads (and what they depend on)
CACHED_MODULES = list(dict.fromkeys(GUEST_MODULES + HW_MODULES + VFIO_MODULES + VM_MODULES + CAPTURE_MODULES))
LAYOUT_VERSION = "3"
# Debian suites a kernel package is looked for in (private apt configuration each) when
# the apt this runs with does not know it, oldest first
SUITES = ["bookworm", "trixie", "sid"]
# Suites without -updates and -security companions
UNSTABLE_SUITES = {"sid", "unstable", "experimental"}
# Guest tools taken from the kernel's suite when it is newer than the host's
GUEST_TOOLS = ["makedumpfile"]


class FetchError(Exception):
    """A step failed; the message says which and how to fix it."""


def log(msg: str) -> None:
    print(f"distro_kernel: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """~/.cache/dumpkit (DUMPKIT_CACHE overrides)."""
    return Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")


@dataclass(frozen=True)
class DistroKernel:
    """A stock kernel in the cache. ``debug_root`` is laid out like the unpacked -dbg
    package, so it is what a user would pass as ``--debuginfo DIR``."""

    root: Path
    info: dict

    @property
    def release(self) -> str:
        return self.info["kernel_release"]

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_root(self) -> Path:
        """A tree with lib/modules/RELEASE/{kernel/...,modules.dep} for the guest modules."""
        return self.root / "modules"

    @property
    def debug_root(self) -> Path:
        return self.root / "debug"

    @property
    def vmlinux(self) -> Path:
        return self.debug_root / "usr/lib/debug/boot" / f"vmlinux-{self.release}"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} not found: install it (scripts/setup does)") from None
    except subprocess.CalledProcessError as e:
        raw = e.stderr or b""
        err = (raw if isinstance(raw, str) else raw.decode(errors="replace")).strip().splitlines()
        raise FetchError(f"{' '.join(cmd[:3])} failed: {err[-1] if err else e.returncode}") from None


def current_package(env: dict | None = None) -> str:
    """The image package Debian's linux-image-amd64 depends on now."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, env=env).stdout
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", out)
    if not m:
        raise FetchError("apt knows no linux-image-amd64: run apt-get update")
    return m.group(1)


def _has_package(package: str, env: dict | None = None) -> bool:
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True,
                         env=env)
    return out.returncode == 0 and "Version:" in out.stdout


def pick_package(env: dict | None = None) -> str:
    """The image package linux-image-amd64 depends on now if the archive has its -dbg
    package, else the newest linux-image-*-amd64 that has one (the archive drops an ABI's
    -dbg package some time after the next ABI arrives, and can lag behind a new one)."""
    current = current_package(env)
    if _has_package(current + "-dbg", env):
        return current
    series = re.fullmatch(r"linux-image-(\d+\.\d+)\.\d+-\d+-amd64", current)
    if series is None and re.fullmatch(r"linux-image-\d+\.\d+\.\d+\+deb\d+(\.\d+)?-amd64", current):
        return _newest_with_dbg(current, env)
    if series is None:
        raise FetchError(f"the archive has no {current}-dbg: choose an image with --package")
    abi = re.compile(r"linux-image-" + re.escape(series.group(1)) + r"\.\d+-(\d+)-amd64")
    candidates = _images_with_dbg(current, series.group(1), abi, env)
    best = max(candidates, key=lambda c: int(abi.fullmatch(c).group(1)))
    log(f"{current} has no -dbg package in the archive: using {best}")
    return best


def _images_with_dbg(current: str, series: str, pattern: re.Pattern, env: dict | None) -> list[str]:
    """The image packages other than ``current`` whose names match ``pattern`` and whose
    -dbg package the archive has.

    :raises FetchError: there is none
    """
    out = _run(["apt-cache", "search", "--names-only", r"^linux-image-.*-amd64-dbg$"],
               capture_output=True, text=True, env=env).stdout
    candidates = [n for line in out.splitlines() if line.strip()
                  for n in [line.split()[0].removesuffix("-dbg")]
                  if n != current and pattern.fullmatch(n) and _has_package(n, env)]
    if not candidates:
        raise FetchError(f"the archive has no {current}-dbg and no other linux-image-{series}.*-amd64-dbg: "
                         "run apt-get update, or choose an image with --package")
    return candidates


def _newest_with_dbg(current: str, env: dict | None) -> str:
    """Trixie's and later suites' names (linux-image-6.12.N+debM[.K]-amd64, the ABI in the
    upstream version): the newest image package of current's series that has its -dbg
    package, by package version."""
    import functools

    series = re.fullmatch(r"linux-image-(\d+\.\d+)\..*", current).group(1)
    name = re.compile(r"linux-image-" + re.escape(series) + r"\.\d+\+deb\d+(\.\d+)?-amd64")
    candidates = _images_with_dbg(current, series, name, env)
    versions = {c: package_version(c, env) for c in candidates}

    def cmp(a: str, b: str) -> int:
        if versions[a] == versions[b]:
            return 0
        lt = subprocess.run(["dpkg", "--compare-versions", versions[a], "lt", versions[b]]).returncode == 0
        return -1 if lt else 1

    best = max(candidates, key=functools.cmp_to_key(cmp))
    log(f"{current} has no -dbg package in the archive: using {best}")
    return best


def package_version(package: str, env: dict | None = None) -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True,
               env=env).stdout
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise FetchError(f"apt knows no {package}: run apt-get update, or choose another with --package")
    return m.group(1)


def _download(package: str, dest: Path, env: dict | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".dl-"))
    try:
        os.chmod(tmp, 0o755)
        _run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, env=env)
        debs = sorted(tmp.glob(f"{package}_*.deb"))
        if not debs:
            raise FetchError(f"apt-get download {package} produced no .deb")
        final = dest / debs[0].name
        debs[0].rename(final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract(deb: Path, dest: Path, patterns: list[str] | None = None) -> None:
    """dpkg-deb's data tar into dest, only the members matching the shell patterns."""
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = ["tar", "-x", "-C", str(dest)] + (["--wildcards", *patterns] if patterns else [])
    rc = subprocess.run(tar, stdin=dpkg.stdout).returncode
    dpkg.stdout.close()
    if dpkg.wait() != 0 or rc != 0:
        raise FetchError(f"extracting {deb.name} failed")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep -> {module name: (relative path, [dependency paths])}; names use '_'."""
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        out[module_name(path)] = (path.strip(), deps.split())
    return out


def module_name(path: str) -> str:
    base = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def load_order(dep: dict[str, tuple[str, list[str]]], wanted: list[str]) -> list[str]:
    """Relative paths of the wanted modules and their dependencies, each after what it needs."""
    by_path = {p: deps for p, deps in dep.values()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, depth: int = 0) -> None:
        if path in seen:
            return
        if depth > 64:
            raise FetchError(f"modules.dep has a dependency loop at {path}")
        seen.add(path)
        for d in by_path.get(path, []):
            visit(d, depth + 1)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key not in dep:
            raise FetchError(f"module {name} is not in this kernel's modules.dep")
        visit(dep[key][0])
    return order


def _elf_build_id(path: Path) -> str | None:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True).stdout
    m = re.search(r"Build ID:\s*([0-9a-f]+)", out)
    return m.group(1) if m else None


def host_suite() -> str:
    """The host's Debian suite (VERSION_CODENAME of /etc/os-release), or ""."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.MULTILINE)
    return m.group(1) if m else ""


def _suite_sources(host: str, suite: str) -> list[str]:
    """Every deb entry of the host's sources whose suite is the host's (HOST, HOST-updates,
    HOST-security, ...), as a one-line entry for the same suite of SUITE, component main,
    keeping its Signed-By (kernel-patches/build does the same for bookworm)."""
    import glob

    entries: list[tuple[str, str, str]] = []

    def add(uris, suites, signed_by):
        opts = f"[signed-by={signed_by}] " if signed_by and "BEGIN PGP" not in signed_by else ""
        for uri in uris:
            for s in suites:
                if host and re.fullmatch(re.escape(host) + r"(-[a-z-]+)?", s):
                    if suite in UNSTABLE_SUITES and s != host:
                        continue        # sid has no -updates or -security suites
                    entry = (opts, uri, suite + s[len(host):])
                    if entry not in entries:
                        entries.append(entry)

    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line.split("#", 1)[0].strip())
            if m:
                signed = re.search(r"signed-by=(\S+)", m.group(1) or "")
                add([m.group(2)], [m.group(3)], signed and signed.group(1))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for para in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in para.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1] in (" ", "\t") and key:
                    fields[key] += "\n" + line
                elif ":" in line:
                    key, value = line.split(":", 1)
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                add(fields.get("uris", "").split(), fields.get("suites", "").split(), fields.get("signed-by"))
    return [f"deb {opts}{uri} {s} main" for opts, uri, s in entries]


LISTS_MAX_AGE_S = 86400


def suite_apt_env(suite: str) -> dict | None:
    """The environment for apt reading SUITE's lists: None for the host's own suite (its
    apt as it is); else APT_CONFIG pointing at a private configuration under
    cache/apt/SUITE/ (lists refreshed when older than a day). Reads lists and downloads
    only: dpkg is /bin/false in it."""
    if suite == host_suite():
        return None
    if not re.fullmatch(r"[a-z]+", suite):
        raise FetchError(f"{suite} is not a Debian suite name")
    d = cache_root() / "apt" / suite
    for sub in ("sources.list.d", "preferences.d", "state/lists/partial", "archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if not (d / "state" / "status").exists():
        (d / "state" / "status").write_text("")
    sources = _suite_sources(host_suite(), suite)
    if not sources:
        raise FetchError(f"found no Debian {host_suite()} entry in /etc/apt/sources.list* to derive {suite}'s from")
    (d / "sources.list").write_text("".join(line + "\n" for line in sources))
    conf = [f'// {suite}\'s lists and downloads for dumpkit (sample-dumps/distro_kernel.py); never installs',
            f'Dir::Etc::SourceList "{d}/sources.list";', f'Dir::Etc::SourceParts "{d}/sources.list.d";',
            f'Dir::Etc::Preferences "{d}/preferences";', f'Dir::Etc::PreferencesParts "{d}/preferences.d";',
            f'Dir::State "{d}/state";', f'Dir::State::status "{d}/state/status";', f'Dir::Cache "{d}";',
            'Dir::Bin::dpkg "/bin/false";', 'Acquire::Languages "none";']
    if os.geteuid() == 0:
        # root's cache is not readable by apt's _apt user
        conf.append('APT::Sandbox::User "root";')
    (d / "apt.conf").write_text("\n".join(conf) + "\n")
    env = dict(os.environ, APT_CONFIG=str(d / "apt.conf"))
    lists = [f for f in (d / "state" / "lists").glob("*_Packages*")]
    if not lists or time.time() - min(f.stat().st_mtime for f in lists) > LISTS_MAX_AGE_S:
        log(f"reading {suite}'s package lists (private apt configuration {d / 'apt.conf'})")
        _run(["apt-get", "update", "-q"], capture_output=True, env=env)
    return env


def locate_package(package: str) -> tuple[str | None, dict | None]:
    """Which apt knows the package: the one this runs with (suite None), else the first
    of SUITES, through its private configuration: (suite, environment for apt)."""
    if _has_package(package):
        return None, None
    for suite in SUITES:
        if suite == host_suite():
            continue
        env = suite_apt_env(suite)
        if _has_package(package, env):
            return suite, env
    raise FetchError(f"apt knows no {package}, neither the host's nor {', '.join(s for s in SUITES if s != host_suite())}'s: "
                     "run apt-get update, or choose another with --package")


def builtin_modules(kver: Path) -> set[str]:
    """Names of the modules a kernel has built in (its modules.builtin)."""
    f = kver / "modules.builtin"
    return {module_name(line) for line in f.read_text().split()} if f.exists() else set()


DECOMPRESS = {".xz": ["xz", "-dc"], ".zst": ["zstd", "-dcq"], ".gz": ["gzip", "-dc"]}


def _copy_module(src: Path, dest: Path) -> None:
    """A module file as the guest's busybox insmod loads it: compressed ones (trixie's
    are .ko.xz) decompressed, as dest names it (.ko)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix in DECOMPRESS and dest.suffix == ".ko":
        with open(dest, "wb") as out:
            _run([*DECOMPRESS[src.suffix], str(src)], stdout=out)
        shutil.copystat(src, dest)
    else:
        shutil.copy2(src, dest)


def _plain(rel: str) -> str:
    for suffix in DECOMPRESS:
        rel = rel.removesuffix(suffix)
    return rel


def _version_lt(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0


def _lib_closure(tool: str, env: dict | None) -> list[str]:
    """The package and the packages it needs, recursively (apt-cache depends, first of
    each alternative), not following perl (makedumpfile's scripts need it, the binary not)."""
    order, todo = [], [tool]
    while todo:
        name = todo.pop(0)
        if name in order:
            continue
        order.append(name)
        out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                    "--no-breaks", "--no-replaces", "--no-enhances", name], capture_output=True, text=True,
                   env=env).stdout
        alternative = False        # "|Depends: a" then "Depends: b": a or b, a taken
        for m in re.finditer(r"^\s*(\|?)(?:Pre)?Depends:\s*(\S+)", out, re.MULTILINE):
            dep = m.group(2).split(":")[0]
            if not alternative and "perl" not in dep:
                todo.append(dep)
            alternative = bool(m.group(1))
    return order


def guest_tool(tool: str, suite: str, env: dict | None) -> dict | None:
    """SUITE's package of a guest tool (unpacked with its libraries and that suite's C
    library and loader under cache/tools/SUITE/TOOL_VERSION/), when it is newer than the
    host's; None when the host's will do."""
    version = package_version(tool, env)
    host = subprocess.run(["dpkg-query", "-W", "-f=${Version}", tool], capture_output=True, text=True).stdout.strip()
    if host and not _version_lt(host, version):
        return None
    root = cache_root() / "tools" / suite / f"{tool}_{version.replace(':', '%3a')}"
    info_path = root / "tool.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    debs = Path(tempfile.mkdtemp(dir=cache_root(), prefix=".tool-"))
    try:
        packages = _lib_closure(tool, env)
        log(f"{tool}: {suite}'s {version} (host's {host or 'none'} is older), with {', '.join(packages[1:])}")
        versions = {}
        for p in packages:
            deb = _download(p, debs, env)
            versions[p] = deb.name.split("_")[1].replace("%3a", ":")
            _extract(deb, work / "root")
    finally:
        shutil.rmtree(debs, ignore_errors=True)
    r = work / "root"
    binary = next((p for p in (r / "usr/sbin" / tool, r / "sbin" / tool, r / "usr/bin" / tool) if p.is_file()), None)
    loader = next((p for p in (r / "usr/lib64/ld-linux-x86-64.so.2", r / "lib64/ld-linux-x86-64.so.2",
                               r / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2") if p.exists()), None)
    if binary is None or loader is None:
        raise FetchError(f"{suite}'s {tool} packages have no {tool} binary or no ld-linux-x86-64.so.2")
    libdirs = [r / "usr/lib/x86_64-linux-gnu", r / "lib/x86_64-linux-gnu"]
    listing = _run([str(loader.resolve()), "--library-path", ":".join(map(str, libdirs)), "--list", str(binary)],
                   capture_output=True, text=True).stdout
    libs = {}           # soname (what the binary asks for) -> file in the packages
    for line in listing.splitlines():
        m = re.search(r"^\s*(\S+)\s+=>\s*(\S+)\s+\(0x", line)
        if "not found" in line or (m and not Path(m.group(2)).resolve().is_relative_to(r.resolve())):
            raise FetchError(f"{suite}'s {tool} needs a library its packages do not carry: {line.strip()}")
        if m and Path(m.group(2)).resolve() != loader.resolve():
            libs[m.group(1)] = str(Path(m.group(2)).resolve().relative_to(r.resolve()))
    info = {"tool": tool, "suite": suite, "version": version, "host_version": host or None,
            "packages": versions, "root": str(root), "binary": str(binary.relative_to(r)),
            "loader": str(loader.resolve().relative_to(r.resolve())), "libraries": dict(sorted(libs.items()))}
    (work / "tool.json").write_text(json.dumps(info, indent=1) + "\n")
    # the libraries and the binary only: the rest of the packages is not needed
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    return info


def fetch(package: str | None = None, force: bool = False, suite: str | None = None) -> DistroKernel:
    """Fetch (once) the stock kernel and its debug info into the cache: the named package
    (looked for in the apt this runs with, then in SUITES), or what linux-image-amd64 of
    ``suite`` (default: of that apt) depends on."""
    env = suite_apt_env(suite) if suite else None
    package = package or pick_package(env)
    if not re.fullmatch(r"linux-image-[0-9][\w.+-]*", package):
        raise FetchError(f"{package} is not a linux-image package name")
    release = package.removeprefix("linux-image-")
    root = cache_root() / "distro" / release
    info_path = root / "kernel.json"
    if info_path.exists() and not force:
        info = json.loads(info_path.read_text())
        if info.get("layout_version") == LAYOUT_VERSION:
            missing = _missing_modules(root, info)
            if missing:
                info = _add_modules(root, info, missing)
            return DistroKernel(root, info)
    if not suite:
        suite, env = locate_package(package)
    version = package_version(package, env)
    # a kernel of another suite: that suite's guest tools where the host's are older
    # (before the long extraction: a tool that cannot be carried fails early)
    tools = {t: info for t in GUEST_TOOLS for info in [guest_tool(t, suite, env) if suite else None] if info}
    debs = cache_root() / "distro" / "debs"
    t0 = time.monotonic()
    log(f"downloading {package} {version} and its -dbg package" + (f" from {suite}" if suite else ""))
    image_debs = _download_image(package, debs, env)
    dbg_deb = _download(package + "-dbg", debs, env)
    t_download = time.monotonic() - t0
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        vmlinuz, kver, builtin, wanted = _unpack_image(image_debs, Path(tmp), release)
        (work / "boot").mkdir(parents=True)
        shutil.copy2(vmlinuz, work / "boot" / f"vmlinuz-{release}")
        # the config and System.map beside it, for whoever reads the kernel's build
        for name in ("config", "System.map"):
            for src in (vmlinuz.parent / f"{name}-{release}", kver / name):
                if src.is_file():
                    shutil.copy2(src, work / "boot" / f"{name}-{release}")
                    break
        mods = work / "modules" / "lib" / "modules" / release
        for rel in wanted:
            _copy_module(kver / rel, mods / _plain(rel))
        for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (kver / f).exists():
                shutil.copy2(kver / f, mods / f)
        _run(["depmod", "-b", str(work / "modules"), release], capture_output=True)
        wanted = [_plain(rel) for rel in wanted]
        patterns = [f"./usr/lib/debug/boot/vmlinux-{release}"] + \
                   [f"./usr/lib/debug/lib/modules/{release}/{rel}" for rel in wanted]
        if len(image_debs) > 1:     # split packages: boot/vmlinux-R links to this
            patterns.append(f"./usr/lib/debug/lib/modules/{release}/vmlinux")
        _extract(dbg_deb, work / "debug", patterns)
    t_extract = time.monotonic() - t1
    vmlinux = work / "debug/usr/lib/debug/boot" / f"vmlinux-{release}"
    if not vmlinux.is_file():
        raise FetchError(f"{dbg_deb.name} has no usr/lib/debug/boot/vmlinux-{release}")
    missing = [rel for rel in wanted if not (work / "debug/usr/lib/debug/lib/modules" / release / rel).is_file()]
    info = {
        "layout_version": LAYOUT_VERSION,
        "package": package, "package_version": version, "dbg_package": package + "-dbg",
        "kernel_release": release, "build_id": _elf_build_id(vmlinux),
        "source_package": "linux", "source_version": version,
        "guest_modules": GUEST_MODULES, "hw_modules": HW_MODULES, "vfio_modules": VFIO_MODULES, "vm_modules": VM_MODULES,
        "capture_modules": CAPTURE_MODULES,
        "module_files": wanted, "modules_without_debug_file": missing,
        **({"apt_suite": suite, "builtin_modules": sorted(set(CACHED_MODULES) & builtin)} if suite else {}),
        **({"guest_tools": tools} if tools else {}),
        "download_s": round(t_download, 1), "extract_s": round(t_extract, 1),
        **({"image_parts": [d.name.split("_")[0] for d in image_debs[1:]]} if len(image_debs) > 1 else {}),
        "deb_bytes": {d.name: d.stat().st_size for d in [*image_debs, dbg_deb]},
    }
    (work / "kernel.json").write_text(json.dumps(info, indent=1) + "\n")
    if root.exists():           # replaced only now: readers of the old layout keep it until here
        shutil.rmtree(root)
    work.rename(root)
    for deb in (*image_debs, dbg_deb):
        deb.unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    info["cache_bytes"] = size
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    log(f"{release}: download {t_download:.0f} s, extract {t_extract:.0f} s, cache {size / 2**20:.0f} MiB")
    return DistroKernel(root, info)


# sid's 7.x image package is a metapackage (linux-signed-amd64 7.2.13+1): the vmlinuz is
# in linux-binary-RELEASE (usr/lib/modules/RELEASE/vmlinuz), the modules in
# linux-modules-RELEASE, modules.builtin and the config in linux-base-RELEASE; its -dbg
# package keeps the vmlinux at usr/lib/debug/lib/modules/RELEASE/vmlinux, with
# usr/lib/debug/boot/vmlinux-RELEASE a symbolic link to it
SPLIT_PARTS = ("linux-binary", "linux-modules", "linux-base")


def image_parts(package: str, env: dict | None = None) -> list[str]:
    """The packages an image package's kernel is split into (sid's 7.x: linux-binary-R,
    linux-modules-R, linux-base-R), from its Depends; [] for one that holds it all."""
    release = package.removeprefix("linux-image-")
    out = _run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True,
               env=env).stdout
    m = re.search(r"^Depends:(.*)$", out, re.MULTILINE)
    names = re.findall(r"[\w.+-]+", m.group(1)) if m else []
    return [n for n in dict.fromkeys(names) if n in {f"{p}-{release}" for p in SPLIT_PARTS}]


def _download_image(package: str, debs: Path, env: dict | None) -> list[Path]:
    """The image package's .deb and those of the packages its kernel is split into."""
    return [_download(p, debs, env) for p in [package, *image_parts(package, env)]]


def _vmlinuz(img: Path, release: str) -> Path | None:
    """Where the unpacked image has its kernel: boot/vmlinuz-R (6.1, 6.12) or
    usr/lib/modules/R/vmlinuz (the split packages of 7.x)."""
    for p in (img / "boot" / f"vmlinuz-{release}", img / "usr/lib/modules" / release / "vmlinuz"):
        if p.is_file():
            return p
    return None


def _unpack_image(image_debs: list[Path], tmp: Path, release: str) -> tuple[Path, Path, set[str], list[str]]:
    """The image packages unpacked under tmp/image with a modules.dep: (the vmlinuz, its
    lib/modules/RELEASE, the modules built in, the package paths of CACHED_MODULES and
    what they depend on, in load order)."""
    img = tmp / "image"
    for deb in image_debs:
        _extract(deb, img)
    # bookworm: lib/modules/RELEASE; trixie (merged /usr): usr/lib/modules/RELEASE
    base = img if (img / "lib" / "modules" / release).is_dir() else img / "usr"
    kver = base / "lib" / "modules" / release
    vmlinuz = _vmlinuz(img, release)
    if vmlinuz is None or not (kver / "kernel").is_dir():
        raise FetchError(f"{', '.join(d.name for d in image_debs)}: no boot/vmlinuz-{release} or "
                         f"usr/lib/modules/{release}/vmlinuz, or no [usr/]lib/modules/{release}/kernel")
    # the package ships no modules.dep: depmod makes it at install time
    _run(["depmod", "-b", str(base), release], capture_output=True)
    dep = parse_modules_dep((kver / "modules.dep").read_text())
    # modules the kernel has built in (trixie's virtio_pci) need no file
    builtin = builtin_modules(kver)
    return vmlinuz, kver, builtin, load_order(dep, [m for m in CACHED_MODULES if m not in builtin])


def _missing_modules(root: Path, info: dict) -> list[str]:
    """The names of CACHED_MODULES a cache entry has no file for (a list that grew since the
    entry was made), built-in ones aside."""
    have = {module_name(rel) for rel in info.get("module_files", [])}
    builtin = set(info.get("builtin_modules", [])) | \
        builtin_modules(root / "modules" / "lib" / "modules" / info["kernel_release"])
    return [m for m in CACHED_MODULES if m not in have and m not in builtin]


def _add_modules(root: Path, info: dict, missing: list[str]) -> dict:
    """Add modules CACHED_MODULES gained since the entry was made (and what they depend on)
    to a cache entry, in place: the packages are downloaded again, only the new modules and
    their debug files are extracted (the -dbg package is read once, ~40 s), depmod runs on
    the cached tree, and kernel.json is rewritten last (an interrupted run is redone)."""
    release, package = info["kernel_release"], info["package"]
    suite = info.get("apt_suite")
    env = suite_apt_env(suite) if suite else None
    log(f"{release}: the cache has no {', '.join(missing)}: adding them")
    debs = cache_root() / "distro" / "debs"
    t0 = time.monotonic()
    image_debs = _download_image(package, debs, env)
    dbg_deb = _download(package + "-dbg", debs, env)
    t_download = time.monotonic() - t0
    t1 = time.monotonic()
    mods_root = root / "modules"
    mods = mods_root / "lib" / "modules" / release
    have = set(info.get("module_files", []))
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        _vmlinuz_path, kver, builtin, wanted = _unpack_image(image_debs, Path(tmp), release)
        new = [rel for rel in wanted if _plain(rel) not in have]
        for rel in new:
            _copy_module(kver / rel, mods / _plain(rel))
        _run(["depmod", "-b", str(mods_root), release], capture_output=True)
        if new:
            _extract(dbg_deb, root / "debug",
                     [f"./usr/lib/debug/lib/modules/{release}/{_plain(rel)}" for rel in new])
    t_extract = time.monotonic() - t1
    wanted = [_plain(rel) for rel in wanted]
    debug_mods = root / "debug/usr/lib/debug/lib/modules" / release
    info = dict(info, guest_modules=GUEST_MODULES, hw_modules=HW_MODULES, vfio_modules=VFIO_MODULES, vm_modules=VM_MODULES,
                capture_modules=CAPTURE_MODULES, module_files=wanted,
                modules_without_debug_file=[rel for rel in wanted if not (debug_mods / rel).is_file()])
    info.setdefault("added", []).append({"modules": [_plain(rel) for rel in new],
                                         "download_s": round(t_download, 1), "extract_s": round(t_extract, 1)})
    if suite:
        info["builtin_modules"] = sorted(set(CACHED_MODULES) & builtin)
    info["cache_bytes"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    tmp_info = root / "kernel.json.partial"
    tmp_info.write_text(json.dumps(info, indent=1) + "\n")
    tmp_info.rename(root / "kernel.json")
    for deb in (*image_debs, dbg_deb):
        deb.unlink(missing_ok=True)
    log(f"{release}: added {len(new)} module files: download {t_download:.0f} s, extract {t_extract:.0f} s")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", help="image package (default: what linux-image-amd64 depends on)")
    ap.add_argument("--suite", help="without --package: what linux-image-amd64 of this Debian suite "
                    "depends on (trixie: 6.12), read through a private apt configuration")
    ap.add_argument("--force", action="store_true", help="fetch again even if cached")
    args = ap.parse_args(argv)
    try:
        k = fetch(args.package, args.force, args.suite)
    except FetchError as e:
        print(f"distro_kernel: error: {e}", file=sys.stderr)
        return 1
    print(k.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
