"""Look at a dump file before drgn does: format, architecture, truncation, foreign files.

drgn and libkdumpfile report a truncated or foreign file late (on the first read that
hits the missing part) and in their own words; these checks turn that into one line
naming the file and the fix.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from dumpkit.errors import AccessError, InputError

__all__ = ["CoreFile", "elf_build_id", "elf_notes", "inspect_core_file"]

ELF_MAGIC = b"\x7fELF"
KDUMP_MAGIC = b"KDUMP   "
FLATTENED_MAGIC = b"makedumpfile\0"
COMPRESSED_MAGICS = {b"\xfd7zXZ\0": ("xz", "xz -dk"), b"\x1f\x8b": ("gzip", "gunzip -k"),
                     b"\x28\xb5\x2f\xfd": ("zstd", "zstd -d"), b"BZh": ("bzip2", "bunzip2 -k")}
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
NT_GNU_BUILD_ID = 3
ELF_MACHINES = {62: "x86_64", 183: "aarch64", 3: "i386", 21: "ppc64", 22: "s390x"}


@dataclass(frozen=True)
class CoreFile:
    """What the file's own headers say.

    :param format: ``"elf"``, ``"kdump"`` or ``"kdump-flattened"``
    :param arch: machine from the header, when it names one
    :param release: kernel release from a kdump header
    """

    path: Path
    format: str
    size: int
    arch: str | None
    release: str | None


def _read(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def elf_notes(f, phdrs: list[tuple[int, int, int]]) -> list[tuple[bytes, int, bytes]]:
    """(name, type, desc) of every note in the PT_NOTE segments of an open ELF file.

    :param phdrs: (p_type, p_offset, p_filesz) of the program headers
    """
    notes = []
    for p_type, off, size in phdrs:
        if p_type != PT_NOTE:
            continue
        data, pos = _read(f, off, size), 0
        while pos + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name_end = pos + 12 + ((namesz + 3) & ~3)
            desc_end = name_end + ((descsz + 3) & ~3)
            if desc_end > len(data):
                break
            notes.append((data[pos + 12:pos + 12 + namesz].rstrip(b"\0"), ntype,
                          data[name_end:name_end + descsz]))
            pos = desc_end
    return notes


def _elf_program_headers(f, size: int, path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(e_type, e_machine, [(p_type, p_offset, p_filesz)]) of a 64-bit little-endian ELF."""
    ehdr = _read(f, 0, 64)
    if len(ehdr) < 64 or ehdr[4] != 2 or ehdr[5] != 1:
        raise InputError(f"{path} is not a 64-bit little-endian ELF file",
                         "dumpkit reads x86_64 and aarch64 dumps")
    e_type, e_machine = struct.unpack_from("<HH", ehdr, 16)
    phoff, = struct.unpack_from("<Q", ehdr, 32)
    phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
    if phoff + phentsize * phnum > size:
        raise InputError(f"{path} is truncated: its program headers end past the file's {size} bytes",
                         "copy the dump again")
    table = _read(f, phoff, phentsize * phnum)
    phdrs = []
    for i in range(phnum):
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", table, i * phentsize)
        p_filesz, = struct.unpack_from("<Q", table, i * phentsize + 32)
        phdrs.append((p_type, p_offset, p_filesz))
    return e_type, e_machine, phdrs


def elf_build_id(path: str | os.PathLike) -> str | None:
    """GNU build-id of an ELF file (vmlinux or a debug file), from its notes.

    :return: lower-case hex, or None if the file has none
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        if _read(f, 0, 4) != ELF_MAGIC:
            return None
        _e_type, _machine, phdrs = _elf_program_headers(f, size, path)
        for name, ntype, desc in elf_notes(f, phdrs):
            if name == b"GNU" and ntype == NT_GNU_BUILD_ID:
                return desc.hex()
        # debug files made with --only-keep-debug keep the note only as a section
        ehdr = _read(f, 0, 64)
        shoff, = struct.unpack_from("<Q", ehdr, 40)
        shentsize, shnum = struct.unpack_from("<HH", ehdr, 58)
        table = _read(f, shoff, shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
        note_sections = [(PT_NOTE, s[4], s[5]) for s in sections if s[1] == 7]  # SHT_NOTE
        for name, ntype, desc in elf_notes(f, note_sections):
            if name == b"GNU" and ntype == NT_GNU_BUILD_ID:
                return desc.hex()
    return None


def _check_elf_core(f, path: Path, size: int) -> CoreFile:
    e_type, machine, phdrs = _elf_program_headers(f, size, path)
    if e_type != ET_CORE:
        raise InputError(f"{path} is an ELF file but not a core dump (e_type {e_type}): it looks like "
                         "a kernel image or program", "pass the vmcore; give vmlinux with --debuginfo")
    end = max((off + sz for t, off, sz in phdrs if t in (PT_LOAD, PT_NOTE)), default=0)
    if end > size:
        raise InputError(f"{path} is truncated: {size} of {end} bytes present", "copy the dump again")
    names = {name for name, _t, _d in elf_notes(f, phdrs)}
    if b"VMCOREINFO" not in names and path != Path("/proc/kcore"):
        raise InputError(f"{path} is an ELF core dump without VMCOREINFO: not a Linux kernel dump "
                         "(a process core file?)", "pass a kernel vmcore")
    return CoreFile(path, "elf", size, ELF_MACHINES.get(machine), None)


def _check_kdump(f, path: Path, size: int) -> CoreFile:
    header = _read(f, 0, 4096)
    if len(header) < 440:
        raise InputError(f"{path} is truncated inside its kdump header", "copy the dump again")
    utsname = [header[12 + 65 * i:12 + 65 * (i + 1)].split(b"\0")[0].decode(errors="replace")
               for i in range(6)]
    block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<iiii", header, 428)
    if block_size <= 0 or block_size & (block_size - 1) or sub_hdr_size < 0 or bitmap_blocks < 0:
        raise InputError(f"{path} has a corrupt kdump header (block size {block_size})",
                         "copy the dump again or regenerate it with makedumpfile")
    bitmap_off = (1 + sub_hdr_size) * block_size
    desc_off = bitmap_off + bitmap_blocks * block_size
    if desc_off > size:
        raise InputError(f"{path} is truncated: {size} bytes, its page bitmaps end at {desc_off}",
                         "copy the dump again")
    half = bitmap_blocks * block_size // 2
    dumpable = _read(f, bitmap_off + half, half)
    n_pages = sum(bin(b).count("1") for b in dumpable) if len(dumpable) == half else -1
    descs = _read(f, desc_off, max(n_pages, 0) * 24)
    if n_pages < 0 or len(descs) < n_pages * 24:
        raise InputError(f"{path} is truncated: {size} bytes, its page descriptors end past that",
                         "copy the dump again")
    end = max((off + sz for off, sz, _fl, _pf in struct.iter_unpack("<qIIQ", descs)), default=desc_off)
    if end > size:
        raise InputError(f"{path} is truncated: {size} of {end} bytes present", "copy the dump again")
    machine = utsname[4] or None
    return CoreFile(path, "kdump", size, machine, utsname[2] or None)


def inspect_core_file(path: str | os.PathLike) -> CoreFile:
    """Check that path is a complete, readable kernel dump and say what kind.

    :raises InputError: missing, a directory, empty, truncated, or not a kernel dump
    :raises AccessError: not readable by this user
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a dump", "pass the vmcore file inside it")
    try:
        f = open(path, "rb")
    except PermissionError:
        raise AccessError(f"{path}: permission denied", "make it readable or run as its owner") from None
    with f:
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{path} is empty", "the dump was not saved; check the capture kernel's log")
        magic = f.read(16)
        if magic.startswith(ELF_MAGIC):
            return _check_elf_core(f, path, size)
        if magic.startswith(KDUMP_MAGIC):
            return _check_kdump(f, path, size)
        if magic.startswith(FLATTENED_MAGIC):
            return CoreFile(path, "kdump-flattened", size, None, None)
        for prefix, (kind, tool) in COMPRESSED_MAGICS.items():
            if magic.startswith(prefix):
                raise InputError(f"{path} is {kind}-compressed", f"decompress it first: {tool} {path}")
    raise InputError(f"{path} is not a kernel dump (neither an ELF core nor kdump-compressed)",
                     "pass a vmcore saved by kdump/makedumpfile or QEMU")
