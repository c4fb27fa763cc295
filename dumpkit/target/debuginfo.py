"""Which debug file describes the dumped kernel: an explicit path, the sample-dumps
manifest, or drgn's standard search; always checked against the kernel's build-id."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dumpkit.errors import DebugInfoError
from dumpkit.target.corefile import elf_build_id

__all__ = ["DebugFile", "check_debug_file", "find_manifest_debug_file"]

PACKAGED_SAMPLES = Path(__file__).resolve().parents[2] / "sample-dumps"


def _samples_dir() -> Path | None:
    """sample-dumps/ of this checkout; DUMPKIT_SAMPLES overrides ("" turns it off)."""
    env = os.environ.get("DUMPKIT_SAMPLES")
    if env is not None:
        return Path(env) if env else None
    return PACKAGED_SAMPLES


@dataclass(frozen=True)
class DebugFile:
    """A debug file chosen for a kernel.

    :param origin: ``"explicit"``, ``"sample-dumps manifest"`` or ``"drgn standard search"``
    """

    path: str | None
    build_id: str | None
    origin: str


def _manifests_near(dump_path: Path | None) -> list[Path]:
    found = []
    if dump_path is not None:
        for parent in list(dump_path.resolve().parents)[:4]:
            if (parent / "manifest.json").is_file():
                found.append(parent / "manifest.json")
    samples = _samples_dir()
    if samples is not None and (samples / "manifest.json").is_file():
        found.append(samples / "manifest.json")
    return found


def find_manifest_debug_file(build_id: str | None, dump_path: Path | None) -> DebugFile | None:
    """The debug file a sample-dumps manifest lists for this build-id.

    :param build_id: the kernel's build-id from VMCOREINFO, or None if unknown
    :param dump_path: where the dump is; manifests beside it are searched first
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
                return DebugFile(str(path), build_id, "sample-dumps manifest")
    return None


def check_debug_file(path: str | os.PathLike, kernel_build_id: str | None) -> DebugFile:
    """Check an explicitly given debug file against the kernel's build-id.

    :raises DebugInfoError: missing, not ELF, or built for another kernel
    """
    p = Path(path)
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
    if kernel_build_id and file_id and file_id != kernel_build_id:
        raise DebugInfoError(f"debug file {p} is for build-id {file_id}, the dumped kernel is {kernel_build_id}",
                             "pass the vmlinux built with that kernel")
    return DebugFile(str(p), file_id, "explicit")
