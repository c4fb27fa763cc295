#!/usr/bin/env python3
"""Debian's stock kernel for the distro sample scenarios, fetched with apt, never built
or committed.

    sample-dumps/distro_kernel.py                  # the kernel linux-image-amd64 points at
    sample-dumps/distro_kernel.py --package linux-image-6.1.0-N-amd64

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

__all__ = ["DistroKernel", "fetch", "cache_root", "load_order", "GUEST_MODULES", "HW_MODULES",
           "CAPTURE_MODULES", "CACHED_MODULES"]

# What the sample guests load, by module name; dependencies are added from modules.dep.
# qemu_fw_cfg: the first kernel registers its VMCOREINFO with QEMU's vmcoreinfo device
# (a kdump kernel does not), which a QMP dump of the running capture kernel needs
GUEST_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "e1000e", "nvme", "virtio_net", "qemu_fw_cfg"]
# The hardware-load scenarios (hw-load, hw-idle) load these as well: the NICs and
# storage/USB controllers users run, the SCSI disk driver and USB mass storage.
HW_MODULES = ["e1000", "vmxnet3", "vmw_pvscsi", "megaraid_sas", "ahci", "sd_mod", "xhci_pci",
              "usb_storage"]
CAPTURE_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
# What the cache keeps: every module some guest loads (and what they depend on)
CACHED_MODULES = list(dict.fromkeys(GUEST_MODULES + HW_MODULES + CAPTURE_MODULES))
LAYOUT_VERSION = "3"


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
        err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise FetchError(f"{' '.join(cmd[:3])} failed: {err[-1] if err else e.returncode}") from None


def current_package() -> str:
    """The image package Debian's linux-image-amd64 depends on now."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True).stdout
    m = re.search(r"Depends:\s*(linux-image-[0-9][\w.+-]*-amd64)\b", out)
    if not m:
        raise FetchError("apt knows no linux-image-amd64: run apt-get update")
    return m.group(1)


def _has_package(package: str) -> bool:
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True)
    return out.returncode == 0 and "Version:" in out.stdout


def pick_package() -> str:
    """The image package linux-image-amd64 depends on now if the archive has its -dbg
    package, else the newest linux-image-*-amd64 that has one (the archive drops an ABI's
    -dbg package some time after the next ABI arrives, and can lag behind a new one)."""
    current = current_package()
    if _has_package(current + "-dbg"):
        return current
    series = re.fullmatch(r"linux-image-(\d+\.\d+)\.\d+-\d+-amd64", current)
    if series is None:
        raise FetchError(f"the archive has no {current}-dbg: choose an image with --package")
    abi = re.compile(r"linux-image-" + re.escape(series.group(1)) + r"\.\d+-(\d+)-amd64")
    out = _run(["apt-cache", "search", "--names-only", r"^linux-image-.*-amd64-dbg$"],
               capture_output=True, text=True).stdout
    candidates = [name for line in out.splitlines() if line.strip()
                  for name in [line.split()[0].removesuffix("-dbg")]
                  if name != current and abi.fullmatch(name) and _has_package(name)]
    if not candidates:
        raise FetchError(f"the archive has no {current}-dbg and no other linux-image-{series.group(1)}.*-amd64-dbg: "
                         "run apt-get update, or choose an image with --package")
    best = max(candidates, key=lambda c: int(abi.fullmatch(c).group(1)))
    log(f"{current} has no -dbg package in the archive: using {best}")
    return best


def package_version(package: str) -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True).stdout
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise FetchError(f"apt knows no {package}: run apt-get update, or choose another with --package")
    return m.group(1)


def _download(package: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".dl-"))
    try:
        os.chmod(tmp, 0o755)
        _run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True)
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


def fetch(package: str | None = None, force: bool = False) -> DistroKernel:
    """Fetch (once) the stock kernel and its debug info into the cache."""
    package = package or pick_package()
    if not re.fullmatch(r"linux-image-[0-9][\w.+-]*", package):
        raise FetchError(f"{package} is not a linux-image package name")
    release = package.removeprefix("linux-image-")
    root = cache_root() / "distro" / release
    info_path = root / "kernel.json"
    if info_path.exists() and not force:
        info = json.loads(info_path.read_text())
        if info.get("layout_version") == LAYOUT_VERSION:
            return DistroKernel(root, info)
    version = package_version(package)
    debs = cache_root() / "distro" / "debs"
    t0 = time.monotonic()
    log(f"downloading {package} {version} and its -dbg package")
    image_deb = _download(package, debs)
    dbg_deb = _download(package + "-dbg", debs)
    t_download = time.monotonic() - t0
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        img = Path(tmp) / "image"
        _extract(image_deb, img)
        kver = img / "lib" / "modules" / release
        if not (img / "boot" / f"vmlinuz-{release}").is_file() or not kver.is_dir():
            raise FetchError(f"{image_deb.name} has no boot/vmlinuz-{release} or lib/modules/{release}")
        # the package ships no modules.dep: depmod makes it at install time
        _run(["depmod", "-b", str(img), release], capture_output=True)
        dep = parse_modules_dep((kver / "modules.dep").read_text())
        wanted = load_order(dep, CACHED_MODULES)
        (work / "boot").mkdir(parents=True)
        for f in (img / "boot").iterdir():
            shutil.copy2(f, work / "boot" / f.name)
        mods = work / "modules" / "lib" / "modules" / release
        for rel in wanted:
            (mods / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(kver / rel, mods / rel)
        for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (kver / f).exists():
                shutil.copy2(kver / f, mods / f)
        _run(["depmod", "-b", str(work / "modules"), release], capture_output=True)
        patterns = [f"./usr/lib/debug/boot/vmlinux-{release}"] + \
                   [f"./usr/lib/debug/lib/modules/{release}/{rel}" for rel in wanted]
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
        "guest_modules": GUEST_MODULES, "hw_modules": HW_MODULES, "capture_modules": CAPTURE_MODULES,
        "module_files": wanted, "modules_without_debug_file": missing,
        "download_s": round(t_download, 1), "extract_s": round(t_extract, 1),
        "deb_bytes": {image_deb.name: image_deb.stat().st_size, dbg_deb.name: dbg_deb.stat().st_size},
    }
    (work / "kernel.json").write_text(json.dumps(info, indent=1) + "\n")
    if root.exists():           # replaced only now: readers of the old layout keep it until here
        shutil.rmtree(root)
    work.rename(root)
    for deb in (image_deb, dbg_deb):
        deb.unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    info["cache_bytes"] = size
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    log(f"{release}: download {t_download:.0f} s, extract {t_extract:.0f} s, cache {size / 2**20:.0f} MiB")
    return DistroKernel(root, info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", help="image package (default: what linux-image-amd64 depends on)")
    ap.add_argument("--force", action="store_true", help="fetch again even if cached")
    args = ap.parse_args(argv)
    try:
        k = fetch(args.package, args.force)
    except FetchError as e:
        print(f"distro_kernel: error: {e}", file=sys.stderr)
        return 1
    print(k.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
