"""Which kernel a dump is of, read cheaply, and which debug files belong to it.

A fleet run meets dumps of many kernels. :func:`dump_identity` reads a dump's
VMCOREINFO (kernel release, BUILD-ID) straight from its header or ELF notes, without drgn
and without touching page data. :class:`DebugIndex` maps build-ids to the vmlinux found
under ``--debuginfo`` trees (and ``/usr/lib/debug``) and to the module directory of that
kernel beside it, so each dump is opened with its own kernel's files only.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dumpkit.target.corefile import PT_NOTE, elf_build_id, elf_notes

__all__ = ["DebugIndex", "KernelDebug", "dump_identity", "read_vmcoreinfo"]

VMCOREINFO_MAX = 1 << 20
MAX_WALK_ENTRIES = 500_000
SYSTEM_DEBUG = "/usr/lib/debug"


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _vmcoreinfo_from_notes(notes) -> str | None:
    for name, _ntype, desc in notes:
        if name == b"VMCOREINFO":
            return desc.rstrip(b"\0").decode(errors="replace")
    return None


def read_vmcoreinfo(path: str | os.PathLike) -> dict[str, str]:
    """KEY=value fields of a dump's VMCOREINFO, from the kdump sub-header or the ELF
    PT_NOTE segments; empty when the file has none this reader understands (flattened
    format, damaged header): the caller then lets drgn find out."""
    with open(path, "rb") as f:
        head = f.read(4096)
        if head.startswith(b"KDUMP   ") and len(head) >= 464:
            version, = struct.unpack_from("<i", head, 8)
            block_size, = struct.unpack_from("<i", head, 428)
            if version < 3 or not 512 <= block_size <= (1 << 20):
                return {}
            f.seek(block_size)
            sub = f.read(64)
            if len(sub) < 64:
                return {}
            vi_off, vi_size, note_off, note_size = struct.unpack_from("<QQQQ", sub, 32)
            if 0 < vi_size <= VMCOREINFO_MAX:
                f.seek(vi_off)
                return _parse(f.read(vi_size).decode(errors="replace"))
            if 0 < note_size <= 64 << 20:
                text = _vmcoreinfo_from_notes(elf_notes(f, [(PT_NOTE, note_off, note_size)]))
                return _parse(text) if text else {}
            return {}
        if head.startswith(b"\x7fELF") and len(head) >= 64 and head[4] == 2:     # ELF64
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            if phentsize < 56 or phnum > 65535:
                return {}
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            phdrs = []
            for i in range(min(phnum, len(table) // phentsize)):
                p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
                if p_type == PT_NOTE and p_filesz <= 64 << 20:
                    phdrs.append((p_type, p_offset, p_filesz))
            text = _vmcoreinfo_from_notes(elf_notes(f, phdrs))
            return _parse(text) if text else {}
    return {}


def dump_identity(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(kernel release, build-id) of a dump from its VMCOREINFO; (None, None) if unknown."""
    try:
        info = read_vmcoreinfo(path)
    except (OSError, struct.error, ValueError):
        return None, None
    bid = info.get("BUILD-ID")
    return info.get("OSRELEASE"), (bid.strip().lower() if bid else None)


@dataclass(frozen=True)
class KernelDebug:
    """Debug files of one kernel: its vmlinux, and the directory of its modules' debug
    files when the tree has one (``…/lib/modules/RELEASE``)."""

    build_id: str
    vmlinux: str
    modules: str | None = None

    def paths(self) -> list[str]:
        return [self.vmlinux, *([self.modules] if self.modules else [])]


@dataclass
class DebugIndex:
    """vmlinux files by build-id, from directory trees (bounded walk, ``.build-id`` links
    skipped: they name the same files). Small and picklable: built once by the client,
    shipped with every task."""

    kernels: dict[str, KernelDebug] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, paths=(), system: bool = True) -> "DebugIndex":
        index = cls()
        roots = [str(p) for p in paths]
        if system and os.path.isdir(SYSTEM_DEBUG) and SYSTEM_DEBUG not in roots:
            roots.append(SYSTEM_DEBUG)
        for root in roots:
            index.add(root)
        return index

    def add(self, root: str) -> None:
        p = Path(root)
        if p.is_file():
            self._add_vmlinux(str(p.resolve()), None)
            return
        if not p.is_dir():
            self.errors.append(f"{root}: not a file or directory")
            return
        self.roots.append(str(p.resolve()))
        entries = 0
        for dirpath, dirnames, filenames in os.walk(p, onerror=lambda e: None):
            dirnames[:] = sorted(d for d in dirnames if d != ".build-id")
            entries += len(filenames) + len(dirnames)
            if entries > MAX_WALK_ENTRIES:
                self.errors.append(f"{root}: more than {MAX_WALK_ENTRIES} entries, walk stopped")
                return
            for name in filenames:
                if name.startswith("vmlinux") and not name.endswith((".xz", ".gz", ".zst", ".bz2")):
                    self._add_vmlinux(os.path.join(dirpath, name), p)

    def _add_vmlinux(self, path: str, root: Path | None) -> None:
        try:
            bid = elf_build_id(path)
        except Exception:          # not ELF, damaged, unreadable: not a candidate
            return
        if not bid or bid in self.kernels:
            return
        self.kernels[bid] = KernelDebug(bid, os.path.realpath(path), self._modules_dir(path, root))

    @staticmethod
    def _modules_dir(vmlinux: str, root: Path | None) -> str | None:
        """``lib/modules/RELEASE`` of the tree: the release from the vmlinux's own name
        (``vmlinux-RELEASE``) or the directory holding it."""
        v = Path(vmlinux)
        candidates = []
        if v.name.startswith("vmlinux-"):
            release = v.name[len("vmlinux-"):].removesuffix(".debug")
            base = root or v.parent
            candidates += [base / "usr/lib/debug/lib/modules" / release, base / "lib/modules" / release]
        if v.parent.parent.name == "modules":
            candidates.append(v.parent)
        for c in candidates:
            if c.is_dir():
                return str(c.resolve())
        return None

    def lookup(self, build_id: str | None) -> KernelDebug | None:
        if not build_id:
            return None
        hit = self.kernels.get(build_id)
        if hit is not None:
            return hit
        for root in self.roots:     # the standard build-id link: ROOT/.build-id/ab/cdef….debug
            for base in (Path(root), Path(root) / "usr/lib/debug"):
                link = base / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
                if link.is_file():
                    return KernelDebug(build_id, str(link.resolve()))
        return None

    def __len__(self) -> int:
        return len(self.kernels)
