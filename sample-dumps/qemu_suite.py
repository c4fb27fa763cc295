#!/usr/bin/env python3
"""A QEMU new enough for the scenarios that need it, without installing one into the host.

    sample-dumps/qemu_suite.py                 # QEMU >= 10.0: prints "BINARY VERSION"
    sample-dumps/qemu_suite.py --min 10.0 --command   # the command prefix, env and -L dirs
    sample-dumps/qemu_suite.py --json          # what qemu_for() returns

VT-d scalable mode with first-stage tables (``-device intel-iommu,intremap=on,
x-scalable-mode=on,x-flts=on``) needs QEMU >= 10.0; Debian 12's is 7.2. When the host's
``qemu-system-x86_64 --version`` is new enough it is used as it is (Debian 13 has 10.0).
Otherwise bookworm-backports' qemu-system-x86 is fetched with ``apt-get download``
through a private apt configuration under ~/.cache/dumpkit/apt/bookworm-backports/
(the host's Debian entries for bookworm, -updates and -security plus bookworm-backports,
all at one priority so a package's candidate is its newest version; own lists, empty
dpkg status, dpkg /bin/false: lists and downloads only, as distro_kernel.py's per-suite
configurations), together with every package of its Depends the host does not satisfy
(dpkg's installed versions against the relations, recursively: qemu-system-common,
qemu-system-data and, as 10.0.2 asks for seabios >> 1.16.3-1~, seabios; a library only
if the host lacks it or has it too old, then put on LD_LIBRARY_PATH). They are unpacked
(dpkg-deb's data tar) into ~/.cache/dumpkit/qemu/PACKAGE_VERSION/ (":" as "%3a";
DUMPKIT_CACHE overrides ~/.cache/dumpkit), the .deb files deleted, and what no sample
runs (documentation, qemu-system-i386, ...) removed: 13 MiB downloaded, 38 MiB kept.

Debian's QEMU 10 is built non-relocatable: unpacked elsewhere it would still read the
host's /usr/share/qemu (7.2's data), /usr/share/seabios (too old) and modules. So every
directory of its firmware path (``-L help``: /usr/share/qemu, /usr/share/seabios,
/usr/lib/ipxe/qemu) is passed with ``-L`` (searched first), the packages' copy where
they carry one, else the host's (its ipxe-qemu satisfies the unversioned dependency),
and QEMU_MODULE_DIR names the packages' module directory. A ``-machine q35 -kernel``
boot reads bios-256k.bin (seabios), kvmvapic.bin and linuxboot_dma.bin
(qemu-system-data) and each NIC's option ROM (efi-e1000e.rom, efi-virtio.rom:
ipxe-qemu); a VGA device vgabios-stdvga.bin (seabios).

In QEMU 10.0.2 x-flts=on needs x-scalable-mode=on and aw-bits=48 (the default), and
combines with caching-mode=on (the guest then sees CM and FLTS, no SLTS).

A second call only checks the cache (the binary answers ``--version``, the host's
firmware directories still exist); it reads no lists. Failures raise QemuSuiteError,
whose message says what failed and how to fix it; the CLI prints it as one line.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distro_kernel as dk  # noqa: E402

__all__ = ["QemuBinary", "QemuSuiteError", "qemu_for", "host_qemu", "cached_qemu", "fetch_qemu",
           "backports_apt_env", "fetch_closure", "parse_relations", "BACKPORTS_SUITE", "QEMU_PACKAGE",
           "MIN_VERSION"]

BACKPORTS_SUITE = "bookworm-backports"
QEMU_PACKAGE = "qemu-system-x86"
BINARY = "qemu-system-x86_64"
# x-flts (VT-d first-stage translation in scalable mode) arrived in QEMU 10.0
MIN_VERSION = (10, 0)
LAYOUT_VERSION = "1"
# Dependencies that cannot be carried next to the binary: the binary runs with the host's
# loader, which must be the C library's
UNCARRIED = {"libc6"}
# The package contents no sample runs (of usr/bin only BINARY is kept: qemu-system-i386 and
# -microvm are 37 MB)
PRUNE = ["usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/bug", "usr/share/applications",
         "usr/share/doc-base", "usr/share/icons", "usr/lib/systemd", "etc"]

Relation = tuple[str, "str | None", "str | None"]          # name, operator, version


class QemuSuiteError(dk.FetchError):
    """A step failed; the message says which and how to fix it."""


def log(msg: str) -> None:
    print(f"qemu_suite: {msg}", file=sys.stderr, flush=True)


def _output(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A command's standard output (distro_kernel._run: FetchError with its last error
    line when it fails; it is called in bytes mode, its error path decodes bytes)."""
    return dk._run(cmd, capture_output=True, env=env).stdout.decode(errors="replace")


def _s(suite: str) -> str:
    """The possessive: bookworm-backports', trixie's."""
    return suite + ("'" if suite.endswith("s") else "'s")


@dataclass(frozen=True)
class QemuBinary:
    """How to run a qemu-system-x86_64: ``argv_prefix()`` + the machine's arguments, in an
    environment with ``env`` added (``environ()``). ``data_dirs`` are passed with -L
    (searched before QEMU's own firmware path); ``version`` is QEMU's ("10.0.2")."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)
    data_dirs: list[Path] = field(default_factory=list)
    version: str = ""
    origin: str = "host"        # "host", or "SUITE PACKAGE_VERSION" for a fetched one

    def argv_prefix(self) -> list[str]:
        """[binary, "-L", dir, ...]: what a command line starts with."""
        return [str(self.path)] + [a for d in self.data_dirs for a in ("-L", str(d))]

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with ``env`` added: the environment to run it in."""
        return dict(os.environ if base is None else base, **self.env)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "env": self.env, "data_dirs": [str(d) for d in self.data_dirs],
                "version": self.version, "origin": self.origin, "argv_prefix": self.argv_prefix()}


def parse_version(text: str) -> tuple[int, ...]:
    """"10.0.2" -> (10, 0, 2); "10.0" -> (10, 0)."""
    m = re.match(r"(\d+(?:\.\d+)*)", text.strip())
    if not m:
        raise QemuSuiteError(f"{text!r} is not a QEMU version (like 10.0)")
    return tuple(int(p) for p in m.group(1).split("."))


def _version_of(binary: Path | str, env: dict[str, str] | None = None) -> str | None:
    """What ``BINARY --version`` says its version is ("7.2.22"), None if it does not run."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, **env) if env else None)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"QEMU emulator version (\d+\.\d+(?:\.\d+)?)", out.stdout)
    return m.group(1) if out.returncode == 0 and m else None


def host_qemu() -> QemuBinary | None:
    """The host's qemu-system-x86_64 as it is, None if there is none."""
    path = shutil.which(BINARY)
    version = _version_of(path) if path else None
    return QemuBinary(Path(path), version=version) if path and version else None


# --- the private apt configuration -----------------------------------------------------

def backports_apt_env(suite: str = BACKPORTS_SUITE) -> dict[str, str]:
    """The environment for apt reading SUITE (NAME-backports) and NAME, NAME-updates,
    NAME-security through a private configuration under cache/apt/SUITE/ (lists refreshed
    when older than a day), every suite at priority 500: a package's candidate is its
    newest version. Lists and downloads only: dpkg is /bin/false in it.

    distro_kernel.suite_apt_env cannot be asked for it: it takes a plain suite name and
    gives it the host's -updates and -security suites, which a -backports suite has not."""
    m = re.fullmatch(r"([a-z]+)-backports", suite)
    if not m:
        raise QemuSuiteError(f"{suite} is not a Debian backports suite name (like bookworm-backports)")
    base = m.group(1)
    d = dk.cache_root() / "apt" / suite
    for sub in ("sources.list.d", "preferences.d", "state/lists/partial", "archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if not (d / "state" / "status").exists():
        (d / "state" / "status").write_text("")
    host = dk.host_suite()
    sources = dk._suite_sources(host, base)
    plain = [s for s in sources if s.endswith(f" {base} main")]
    if not plain:
        raise QemuSuiteError(f"found no Debian {host or '(unknown suite)'} entry in /etc/apt/sources.list* "
                             f"to derive {_s(suite)} from: add the Debian archive to the host's apt sources")
    sources += [s.removesuffix(f" {base} main") + f" {suite} main" for s in plain]
    (d / "sources.list").write_text("".join(line + "\n" for line in sources))
    (d / "preferences").write_text(f"Package: *\nPin: release n={suite}\nPin-Priority: 500\n")
    conf = [f"// {_s(suite)} (and {_s(base)}) lists and downloads for dumpkit (sample-dumps/qemu_suite.py); "
            "never installs",
            f'Dir::Etc::SourceList "{d}/sources.list";', f'Dir::Etc::SourceParts "{d}/sources.list.d";',
            f'Dir::Etc::Preferences "{d}/preferences";', f'Dir::Etc::PreferencesParts "{d}/preferences.d";',
            f'Dir::State "{d}/state";', f'Dir::State::status "{d}/state/status";', f'Dir::Cache "{d}";',
            'Dir::Bin::dpkg "/bin/false";', 'Acquire::Languages "none";']
    if os.geteuid() == 0:
        conf.append('APT::Sandbox::User "root";')     # root's cache is not readable by _apt
    (d / "apt.conf").write_text("\n".join(conf) + "\n")
    env = dict(os.environ, APT_CONFIG=str(d / "apt.conf"))
    lists_dir = d / "state" / "lists"

    def lists() -> list[Path]:
        return list(lists_dir.glob(f"*_dists_{suite}_*Packages*"))

    all_lists = list(lists_dir.glob("*_Packages*"))
    if not lists() or time.time() - min(f.stat().st_mtime for f in all_lists) > dk.LISTS_MAX_AGE_S:
        log(f"reading {_s(suite)} package lists (private apt configuration {d / 'apt.conf'})")
        try:
            done = dk._run(["apt-get", "update", "-q"], capture_output=True, env=env)
        except dk.FetchError as e:
            raise QemuSuiteError(f"reading {_s(suite)} lists: {e}") from None
        # apt-get update succeeds when it could fetch nothing; it says so in W: and E: lines
        warnings = [line for line in done.stderr.decode(errors="replace").splitlines()
                    if line.startswith(("W:", "E:")) and suite in line]
        if not lists():
            raise QemuSuiteError(f"apt-get update fetched no {_s(suite)} lists "
                                 f"({warnings[0] if warnings else 'no message'}): check the network "
                                 f"(or whether {suite} moved to archive.debian.org)")
    return env


# --- dependencies ----------------------------------------------------------------------

_RELATION = re.compile(r"\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*"
                       r"(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^\s)]+)\s*\))?\s*(?:\[[^\]]*\])?\s*")


def parse_relations(text: str) -> list[list[Relation]]:
    """A Depends-like field: [[alternative, ...], ...], each (name, operator, version);
    architecture qualifiers (":any") dropped."""
    groups = []
    for group in filter(str.strip, text.split(",")):
        alts = []
        for alt in group.split("|"):
            m = _RELATION.fullmatch(alt)
            if not m:
                raise QemuSuiteError(f"cannot read the package relation {alt.strip()!r}")
            alts.append((m.group(1), m.group(2), m.group(3)))
        groups.append(alts)
    return groups


def _satisfies(version: str | None, op: str | None, wanted: str | None) -> bool:
    """``version`` satisfies "(op wanted)" (no operator: any version; dpkg's comparison)."""
    if op is None:
        return True
    if version is None:
        return False
    return subprocess.run(["dpkg", "--compare-versions", version, op, wanted]).returncode == 0


def _relation_text(group: list[Relation]) -> str:
    return " | ".join(n + (f" ({op} {v})" if op else "") for n, op, v in group)


@dataclass
class HostPackages:
    """The host's installed packages (native architecture or all): versions, and what
    they provide (virtual name -> provided versions, None for an unversioned Provides)."""

    versions: dict[str, str]
    provides: dict[str, list[str | None]]

    @classmethod
    def read(cls) -> HostPackages:
        arch = _output(["dpkg", "--print-architecture"]).strip()
        out = _output(["dpkg-query", "-W", "-f=${Package}\t${Architecture}\t${db:Status-Abbrev}\t${Version}"
                       "\t${Provides}\n"])
        versions, provides = {}, {}
        for line in out.splitlines():
            name, pkg_arch, status, version, prov = (line.split("\t") + [""] * 5)[:5]
            if pkg_arch not in (arch, "all") or status[1:2] != "i":
                continue
            versions[name] = version
            for group in parse_relations(prov):
                for pname, _op, pversion in group:
                    provides.setdefault(pname, []).append(pversion)
        return cls(versions, provides)

    def satisfies(self, name: str, op: str | None, version: str | None) -> bool:
        if name in self.versions and _satisfies(self.versions[name], op, version):
            return True
        return any(op is None or (v is not None and _satisfies(v, op, version))
                   for v in self.provides.get(name, []))


def _candidates(names: list[str], env: dict[str, str], memo: dict[str, tuple[str, str] | None]) -> None:
    """Into memo, for each name not in it: the candidate (newest) version of the package
    the private apt knows and its Pre-Depends and Depends, None for a name it has no
    package of (a virtual one). One apt-cache call for them all (each costs ~1 s)."""
    names = [n for n in dict.fromkeys(names) if n not in memo]
    if not names:
        return
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", *names], capture_output=True, text=True,
                         env=env).stdout           # exit status 100 when one of them is unknown
    for n in names:
        memo[n] = None
    for record in re.split(r"\n\s*\n", out):
        name = re.search(r"^Package:\s*(\S+)", record, re.MULTILINE)
        version = re.search(r"^Version:\s*(\S+)", record, re.MULTILINE)
        if name and version and name.group(1) in memo:
            deps = re.findall(r"^(?:Pre-)?Depends:\s*(.*)$", record, re.MULTILINE)
            memo[name.group(1)] = (version.group(1), ", ".join(deps))


def fetch_closure(package: str, env: dict[str, str], host: HostPackages | None = None) -> dict[str, str]:
    """``package``'s candidate and, recursively, the candidates of every dependency the
    host does not satisfy (nor a package already taken): {package: version}, in the
    order found. Of alternatives, the first whose candidate satisfies the relation.

    :raises QemuSuiteError: a relation nothing satisfies, or one on the C library
    """
    host = host or HostPackages.read()
    memo: dict[str, tuple[str, str] | None] = {}
    want: dict[str, str] = {}
    why: dict[str, str] = {package: "asked for"}
    todo = [package]
    while todo:
        name = todo.pop(0)
        if name in want:
            continue
        _candidates([name], env, memo)
        if memo[name] is None:
            raise QemuSuiteError(f"apt knows no {name} ({why[name]}): remove {dk.cache_root() / 'apt'}/"
                                 f"{BACKPORTS_SUITE} and run again with a working network")
        version, depends = memo[name]
        want[name] = version
        missing = [group for group in parse_relations(depends)
                   if not any(host.satisfies(*alt) or (alt[0] in want and _satisfies(want[alt[0]], *alt[1:]))
                              for alt in group)]
        _candidates([alt[0] for group in missing for alt in group], env, memo)
        for group in missing:
            for alt in group:
                if memo[alt[0]] and _satisfies(memo[alt[0]][0], alt[1], alt[2]):
                    if alt[0] in UNCARRIED:
                        raise QemuSuiteError(f"{name} {version} needs {_relation_text([alt])}, the host has "
                                             f"{host.versions.get(alt[0], 'none')}: upgrade the host's "
                                             f"{alt[0]} (it cannot be carried next to the binary)")
                    why.setdefault(alt[0], f"{name} needs {_relation_text([alt])}")
                    todo.append(alt[0])
                    break
            else:
                raise QemuSuiteError(f"{name} {version} needs {_relation_text(group)}: neither the host nor "
                                     f"the private apt ({BACKPORTS_SUITE} and its base suite) has it; "
                                     "install it into the host")
    return want


# --- the cache -------------------------------------------------------------------------

def qemu_cache() -> Path:
    """cache/qemu: one directory per fetched package version, unpacked."""
    return dk.cache_root() / "qemu"


def _entry_name(version: str) -> str:
    return version.replace(":", "%3a")


def _binary_env(root: Path, info: dict) -> dict[str, str]:
    env = {"QEMU_MODULE_DIR": str(root / info["module_dir"])}
    if info.get("library_dirs"):
        env["LD_LIBRARY_PATH"] = ":".join(str(root / d) for d in info["library_dirs"])
    return env


def _load_entry(root: Path) -> QemuBinary | None:
    """The QEMU of a cache entry if its qemu.json is of this layout, its binary answers
    ``--version`` with the recorded version and its host firmware directories exist."""
    try:
        info = json.loads((root / "qemu.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("layout_version") != LAYOUT_VERSION:
        return None
    data_dirs = [root / d for d in info["data_dirs"]]        # absolute ones (the host's) stay
    env = _binary_env(root, info)
    binary = root / info["binary"]
    if not all(d.is_dir() for d in data_dirs) or _version_of(binary, env) != info["qemu_version"]:
        return None
    return QemuBinary(binary, env, data_dirs, info["qemu_version"],
                      f"{info['suite']} {info['package_version']}")


def cached_qemu(min_version: tuple[int, ...] = MIN_VERSION) -> QemuBinary | None:
    """The newest fetched QEMU >= min_version that still runs, None if there is none."""
    found = []
    for info_path in qemu_cache().glob("*/qemu.json"):
        q = _load_entry(info_path.parent)
        if q and q.version_tuple >= tuple(min_version):
            found.append(q)
    return max(found, key=lambda q: q.version_tuple, default=None)


def _data_dirs(root: Path, binary: Path, env: dict[str, str]) -> list[str]:
    """The -L directories, for each one QEMU searches (``-L help``, in its order): the
    packages' copy, relative to root, or where they carry none the host's (absolute).
    Debian's QEMU 10 is built non-relocatable: it would search the host's /usr/share/qemu
    (7.2's data) and /usr/share/seabios (too old) otherwise; QEMU 7.2's relocated them
    next to the executable (prefix/bin/../share/qemu). Both are understood."""
    out = _output([str(binary), "-L", "help"], env=dict(os.environ, **env))
    dirs, real_root = [], Path(os.path.realpath(root))
    for line in filter(str.strip, out.splitlines()):
        d = Path(os.path.realpath(line.strip()))     # a relocated one is under /proc/self/exe's dir
        rel = d.relative_to(real_root) if d.is_relative_to(real_root) else d.relative_to("/")
        if (root / rel).is_dir():
            dirs.append(str(rel))
        elif (Path("/") / rel).is_dir():
            dirs.append(str(Path("/") / rel))
        else:
            log(f"QEMU's firmware directory /{rel} is neither in the packages nor on the host")
    return dirs


def fetch_qemu(suite: str = BACKPORTS_SUITE, min_version: tuple[int, ...] = MIN_VERSION,
               force: bool = False) -> QemuBinary:
    """Fetch (once) SUITE's qemu-system-x86 and the dependencies the host does not
    satisfy, unpacked under cache/qemu/PACKAGE_VERSION/."""
    cache = qemu_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)         # one fetch at a time; the others then find it
        for stale in cache.glob(".debs-*"):      # an interrupted fetch's
            shutil.rmtree(stale, ignore_errors=True)
        env = backports_apt_env(suite)
        memo: dict[str, tuple[str, str] | None] = {}
        _candidates([QEMU_PACKAGE], env, memo)
        cand = memo[QEMU_PACKAGE]
        if cand is None:
            raise QemuSuiteError(f"the private apt knows no {QEMU_PACKAGE}: remove "
                                 f"{dk.cache_root() / 'apt' / suite} and run again")
        version = cand[0]
        upstream = re.sub(r"^\d+:", "", version)
        if parse_version(upstream) < tuple(min_version):
            raise QemuSuiteError(f"{_s(suite)} newest {QEMU_PACKAGE} is {version}, older than "
                                 f"{'.'.join(map(str, min_version))}: install a newer QEMU into the host")
        root = cache / _entry_name(version)
        if not force:
            q = _load_entry(root)
            if q:
                return q
        return _unpack(suite, env, version, root)


def _unpack(suite: str, env: dict[str, str], version: str, root: Path) -> QemuBinary:
    host = HostPackages.read()
    packages = fetch_closure(QEMU_PACKAGE, env, host)
    log(f"{QEMU_PACKAGE} {version} from {suite}, with " + ", ".join(
        f"{p} {v} (host's {host.versions.get(p, 'none')})" for p, v in list(packages.items())[1:]))
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    debs = Path(tempfile.mkdtemp(dir=root.parent, prefix=".debs-"))
    deb_bytes: dict[str, int] = {}
    try:
        t0 = time.monotonic()
        files = []
        for p, v in packages.items():
            deb = dk._download(p, debs, env)
            if deb.name.split("_")[1].replace("%3a", ":") != v:
                raise QemuSuiteError(f"apt-get download {p} gave {deb.name}, not version {v}: run again")
            deb_bytes[deb.name] = deb.stat().st_size
            files.append(deb)
        t_download = time.monotonic() - t0
        t1 = time.monotonic()
        for deb in files:
            dk._extract(deb, work)          # dpkg-deb's data tar, as dpkg-deb -x
    finally:
        shutil.rmtree(debs, ignore_errors=True)
    for rel in PRUNE:
        shutil.rmtree(work / rel, ignore_errors=True)
    for f in (work / "usr/bin").glob("*"):
        if f.name != BINARY:
            f.unlink()
    for f in work.rglob("*"):            # nothing of the cache runs with privileges
        if not f.is_symlink() and f.stat().st_mode & 0o6000:
            f.chmod(f.stat().st_mode & ~0o6000)
    info = _describe(work, suite, version, packages, host)
    t_extract = time.monotonic() - t1
    info.update(download_s=round(t_download, 1), extract_s=round(t_extract, 1), deb_bytes=deb_bytes,
                cache_bytes=sum(f.stat().st_size for f in work.rglob("*") if f.is_file() and not f.is_symlink()))
    (work / "qemu.json").write_text(json.dumps(info, indent=1) + "\n")
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    q = _load_entry(root)
    if q is None:
        raise QemuSuiteError(f"the unpacked {BINARY} in {root} does not run once moved: remove the directory "
                             "and run again")
    log(f"QEMU {q.version}: download {t_download:.0f} s ({sum(deb_bytes.values()) / 2**20:.0f} MiB), "
        f"unpack {t_extract:.0f} s, cache {info['cache_bytes'] / 2**20:.0f} MiB in {root}")
    return q


def _describe(work: Path, suite: str, version: str, packages: dict[str, str], host: HostPackages) -> dict:
    """qemu.json of an unpacked tree: where the binary, its modules, the libraries of the
    fetched packages and the -L directories are; checks that the binary runs."""
    binary = work / "usr/bin" / BINARY
    if not binary.is_file():
        raise QemuSuiteError(f"{QEMU_PACKAGE} {version} has no usr/bin/{BINARY}")
    module_dir = "usr/lib/x86_64-linux-gnu/qemu"
    library_dirs = [d for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
                    if (work / d).is_dir() and any(f.name.startswith("lib") and ".so" in f.name
                                                   for f in (work / d).iterdir())]
    info = {"layout_version": LAYOUT_VERSION, "suite": suite, "package": QEMU_PACKAGE,
            "package_version": version, "packages": packages,
            "host_versions": {p: host.versions.get(p) for p in packages},
            "binary": str(binary.relative_to(work)), "module_dir": module_dir, "library_dirs": library_dirs}
    env = _binary_env(work, info)
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=dict(os.environ, **env))
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if missing:
        raise QemuSuiteError(f"{BINARY} {version} needs {', '.join(missing)}, which neither the host nor the "
                             "fetched packages have: install the packages that carry them into the host")
    info["qemu_version"] = _version_of(binary, env)
    if not info["qemu_version"]:
        err = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             env=dict(os.environ, **env)).stderr.strip().splitlines()
        raise QemuSuiteError(f"the unpacked {BINARY} {version} does not run: {err[-1] if err else '?'}")
    info["data_dirs"] = _data_dirs(work, binary, env)
    return info


def qemu_for(min_version: tuple[int, ...] = MIN_VERSION, force: bool = False) -> QemuBinary:
    """A QEMU >= min_version: the host's if it is one, else the newest cached one that
    still runs, else bookworm-backports' fetched now (``force``: fetched again).

    :raises QemuSuiteError: what failed and how to fix it
    """
    host = host_qemu()
    if host and host.version_tuple >= tuple(min_version) and not force:
        return host
    if not force:
        q = cached_qemu(min_version)
        if q:
            return q
    want = ".".join(map(str, min_version))
    log(f"the host's QEMU is {host.version if host else 'missing'}, < {want}: using {_s(BACKPORTS_SUITE)}")
    try:
        return fetch_qemu(BACKPORTS_SUITE, min_version, force)
    except QemuSuiteError:
        raise
    except dk.FetchError as e:
        raise QemuSuiteError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--min", default=".".join(map(str, MIN_VERSION)), metavar="VERSION",
                    help="the oldest QEMU that will do (default %(default)s)")
    ap.add_argument("--force", action="store_true", help=f"fetch {_s(BACKPORTS_SUITE)} again even if cached "
                    "(and even if the host's is new enough)")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print everything qemu_for() returns, as JSON")
    out.add_argument("--command", action="store_true", help="print a shell command prefix (env, binary, -L)")
    args = ap.parse_args(argv)
    try:
        q = qemu_for(parse_version(args.min), args.force)
    except dk.FetchError as e:
        print(f"qemu_suite: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"qemu_suite: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''} "
              f"(is the cache {dk.cache_root()} a writable directory? DUMPKIT_CACHE chooses it)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(q.as_dict(), indent=1))
    elif args.command:
        print(" ".join([*(["env"] if q.env else []), *(shlex.quote(f"{k}={v}") for k, v in q.env.items()),
                        *map(shlex.quote, q.argv_prefix())]))
    else:
        print(q.path, q.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
