"""Look at a dump file before drgn does: format, architecture, truncation, foreign files.

drgn and libkdumpfile report a truncated or foreign file late (on the first read that
hits the missing part) and in their own words; these checks turn that into one line
naming the file and the fix.
"""

from __future__ import annotations

import operator
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from dumpkit.errors import AccessError, InputError, file_error


class NotADump(InputError):
    """A file that is no kernel dump at all (text, random bytes, a program or kernel image,
    a process core): batch commands give it its own kind of row instead of a failed dump."""

__all__ = ["CoreFile", "NotADump", "elf_build_id", "elf_notes", "inspect_core_file", "read_vmcoreinfo_file"]

ELF_MAGIC = b"\x7fELF"
KDUMP_MAGIC = b"KDUMP   "
FLATTENED_MAGIC = b"makedumpfile\0"
COMPRESSED_MAGICS = {b"\xfd7zXZ\0": ("xz", "xz -dk"), b"\x1f\x8b": ("gzip", "gunzip -k"),
                     b"\x28\xb5\x2f\xfd": ("zstd", "zstd -d"), b"BZh": ("bzip2", "bunzip2 -k")}
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
NT_GNU_BUILD_ID = 3
ELF_MACHINES = {62: "x86_64", 183: "aarch64", 3: "i386", 21: "ppc64", 22: "s390x", 40: "32-bit ARM",
                8: "MIPS", 243: "RISC-V", 20: "ppc", 2: "SPARC", 43: "SPARC64", 258: "LoongArch"}
SUPPORTED_ARCHES = ("x86_64", "aarch64")
ELF64_PHENTSIZE = 56
PN_XNUM = 0xFFFF
# No offset or size in a dump header can exceed this: 4 PiB, the most physical memory a
# 52-bit x86_64 or aarch64 machine addresses. Beyond it a field is damaged, not the file short.
SANE_LIMIT = 1 << 52
KDUMP_INCOMPLETE = 0x8       # DUMP_DH_COMPRESSED_INCOMPLETE: makedumpfile ran out of space
VMCOREINFO_MAX = 1 << 20     # a VMCOREINFO text is a few KiB
SUB_HEADER_MAX = 64 << 20    # kdump sub-header: its struct and the ELF notes of every CPU


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


def _damaged(path: Path, what: str, part: str = "header") -> InputError:
    return InputError(f"{path} has a damaged {part} ({what}): the file is corrupt, not truncated",
                      "copy the dump again from the crashed machine or regenerate it")


def _elf_header(f, size: int, path: Path) -> tuple[int, int, int, int, int]:
    """(e_type, e_machine, e_phoff, e_phentsize, e_phnum) of a 64-bit little-endian ELF,
    with e_phnum taken from section 0 when the file has PN_XNUM or more segments."""
    ehdr = _read(f, 0, 64)
    if len(ehdr) < 64 or ehdr[4] != 2 or ehdr[5] != 1:
        raise InputError(f"{path} is not a 64-bit little-endian ELF file",
                         "dumpkit reads x86_64 and aarch64 dumps")
    e_type, e_machine = struct.unpack_from("<HH", ehdr, 16)
    phoff, shoff = struct.unpack_from("<QQ", ehdr, 32)
    phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
    if phnum == PN_XNUM:            # the real count is sh_info of section header 0
        section0 = _read(f, shoff, 64) if shoff < SANE_LIMIT else b""
        if len(section0) < 48:
            raise _damaged(path, f"{PN_XNUM} program headers and no section 0 with the real count")
        phnum, = struct.unpack_from("<I", section0, 44)
    if phnum:
        if phentsize != ELF64_PHENTSIZE:
            raise _damaged(path, f"ELF program header size {phentsize}, expected {ELF64_PHENTSIZE}")
        if phoff < 64 or phoff > SANE_LIMIT:
            raise _damaged(path, f"ELF program headers at offset {phoff:#x}")
    return e_type, e_machine, phoff, phentsize, phnum


def _elf_segments(f, size: int, path: Path) -> tuple[int, int, list[tuple[int, int, int, int, int]]]:
    """(e_type, e_machine, [(p_type, p_offset, p_vaddr, p_filesz, p_memsz)])."""
    e_type, e_machine, phoff, phentsize, phnum = _elf_header(f, size, path)
    if phoff + phentsize * phnum > size:
        raise InputError(f"{path} is truncated: its program headers end past the file's {size} bytes",
                         "copy the dump again")
    table = _read(f, phoff, phentsize * phnum)
    segments = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz = struct.unpack_from(
            "<IIQQQQQ", table, i * phentsize)
        segments.append((p_type, p_offset, p_vaddr, p_filesz, p_memsz))
    return e_type, e_machine, segments


def _elf_program_headers(f, size: int, path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(e_type, e_machine, [(p_type, p_offset, p_filesz)]) of a 64-bit little-endian ELF."""
    e_type, e_machine, segments = _elf_segments(f, size, path)
    return e_type, e_machine, [(t, off, filesz) for t, off, _va, filesz, _mem in segments]


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
    e_type, machine, _phoff, _phentsize, _phnum = _elf_header(f, size, path)
    if e_type != ET_CORE:
        raise NotADump(f"{path} is an ELF file but not a core dump (e_type {e_type}): it looks like "
                         "a kernel image or program", "pass the vmcore; give vmlinux with --debuginfo")
    arch = ELF_MACHINES.get(machine)
    if arch not in SUPPORTED_ARCHES:
        raise InputError(f"{path} is a dump of a {arch or 'foreign'} machine (ELF e_machine {machine})",
                         "dumpkit reads x86_64 and aarch64 dumps")
    _e_type, _machine, segments = _elf_segments(f, size, path)
    if not segments:
        raise _damaged(path, "an ELF core without program headers")
    end = 0
    for i, (p_type, off, _vaddr, filesz, memsz) in enumerate(segments):
        if p_type not in (PT_LOAD, PT_NOTE):
            continue
        if off > SANE_LIMIT or filesz > SANE_LIMIT or (p_type == PT_LOAD and memsz > SANE_LIMIT):
            raise _damaged(path, f"ELF program header {i}: offset {off:#x}, size {filesz:#x}")
        if p_type == PT_LOAD and filesz > memsz:
            raise _damaged(path, f"ELF program header {i}: {filesz:#x} bytes in the file but only "
                                 f"{memsz:#x} in memory")
        end = max(end, off + filesz)
    if end > size:
        raise InputError(f"{path} is truncated: {size} of {end} bytes present", "copy the dump again")
    phdrs = [(t, off, filesz) for t, off, _va, filesz, _mem in segments]
    names = {name for name, _t, _d in elf_notes(f, phdrs)}
    if b"VMCOREINFO" not in names and path != Path("/proc/kcore"):
        raise NotADump(f"{path} is an ELF core dump without VMCOREINFO: not a Linux kernel dump "
                         "(a process core file?)", "pass a kernel vmcore")
    return CoreFile(path, "elf", size, arch, None)


def _count_bits(data: bytes) -> int:
    return int.from_bytes(data, "little").bit_count()


def _descriptors_in_order(descs: bytes, n_pages: int, data_start: int, block_size: int) -> tuple[int, None] | None:
    """The common case in C-speed passes (no numpy import, no Python loop): every
    descriptor written and sane. None when that does not hold: the caller then looks
    descriptor by descriptor for the first damaged one."""
    if n_pages == 0 or len(descs) < n_pages * 24 or sys.byteorder != "little":
        return None
    words = memoryview(descs)[:n_pages * 24].cast("Q")
    offsets, sizes = words[0::3], memoryview(descs)[:n_pages * 24].cast("I")[2::6]
    if min(offsets) < data_start or max(offsets) > SANE_LIMIT or min(sizes) == 0 or max(sizes) > block_size:
        return None
    return max(map(operator.add, offsets, sizes)), None


def _page_descriptors(descs: bytes, n_pages: int, data_start: int, block_size: int) -> tuple[int, int | None]:
    """(end of the page data, index of the first damaged descriptor or None).

    A descriptor is damaged when its data would start inside the headers, when it is longer
    than a page, or when it points beyond any possible dump. All-zero descriptors are pages
    an incomplete dump never wrote and are left to the reader.
    """
    fast = _descriptors_in_order(descs, n_pages, data_start, block_size)
    if fast is not None:
        return fast
    if n_pages > 100_000:
        import numpy as np

        a = np.frombuffer(descs, dtype=np.dtype([("off", "<i8"), ("size", "<u4"), ("flags", "<u4"),
                                                 ("pfn", "<u8")]), count=n_pages)
        off, sz = a["off"], a["size"].astype(np.int64)
        written = (off != 0) | (sz != 0)
        bad = written & ((off < data_start) | (off > SANE_LIMIT) | (sz == 0) | (sz > block_size))
        first_bad = int(np.argmax(bad)) if bad.any() else None
        end = int((off + sz)[written].max()) if written.any() else data_start
        return max(end, data_start), first_bad
    end = data_start
    for i, (off, sz, _flags, _pfn) in enumerate(struct.iter_unpack("<qIIQ", descs[:n_pages * 24])):
        if off == 0 and sz == 0:
            continue
        if off < data_start or off > SANE_LIMIT or sz == 0 or sz > block_size:
            return end, i
        end = max(end, off + sz)
    return end, None


def _check_kdump(f, path: Path, size: int) -> CoreFile:
    header = _read(f, 0, 4096)
    if len(header) < 464:
        raise InputError(f"{path} is truncated inside its kdump header", "copy the dump again")
    utsname = [header[12 + 65 * i:12 + 65 * (i + 1)].split(b"\0")[0].decode(errors="replace")
               for i in range(6)]
    version, = struct.unpack_from("<i", header, 8)
    status, = struct.unpack_from("<i", header, 424)
    block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<iiII", header, 428)
    if not 0 < version < 64:
        raise _damaged(path, f"kdump header version {version}")
    if block_size < 512 or block_size > (1 << 20) or block_size & (block_size - 1) or sub_hdr_size < 0:
        raise _damaged(path, f"kdump block size {block_size}, sub-header {sub_hdr_size} blocks")
    machine = utsname[4] or None
    if machine is not None and machine not in SUPPORTED_ARCHES:
        raise InputError(f"{path} is a dump of a {machine} machine", "dumpkit reads x86_64 and aarch64 dumps")
    bitmap_off = (1 + sub_hdr_size) * block_size
    desc_off = bitmap_off + bitmap_blocks * block_size
    if desc_off > SANE_LIMIT:
        raise _damaged(path, f"kdump bitmaps of {bitmap_blocks} blocks after {sub_hdr_size} sub-header blocks")
    sub = _read(f, block_size, 104)
    sub_hdr_blocks = SUB_HEADER_MAX // block_size     # bound when the sub-header says nothing usable
    if version >= 4 and len(sub) >= 64:
        # the sub-header is its own struct, the ELF notes and VMCOREINFO (unless it is a note)
        vi_off, vi_size, note_off, note_size = struct.unpack_from("<QQQQ", sub, 32)
        regions = [(o, n) for o, n in ((vi_off, vi_size), (note_off, note_size)) if n]
        if regions and all(block_size <= o <= SUB_HEADER_MAX and n <= SUB_HEADER_MAX for o, n in regions):
            end = max(o + n for o, n in regions)
            sub_hdr_blocks = -(-(end - block_size) // block_size) + 1
    if version >= 6 and len(sub) == 104:
        max_mapnr = struct.unpack_from("<Q", sub, 96)[0] or max_mapnr
    half = bitmap_blocks * block_size // 2
    # each of the two bitmaps holds a bit per page frame, rounded up to whole blocks
    bitmaps_fit = max_mapnr <= half * 8 < max_mapnr + 8 * block_size + 8
    if desc_off > size:
        if sub_hdr_size > sub_hdr_blocks:
            raise _damaged(path, f"a kdump sub-header of {sub_hdr_size} blocks")
        if not bitmaps_fit:
            raise _damaged(path, f"{bitmap_blocks} bitmap blocks for {max_mapnr} page frames")
        raise InputError(f"{path} is truncated: {size} bytes, its page bitmaps end at {desc_off}",
                         "copy the dump again")
    dumpable = _read(f, bitmap_off + half, half)
    n_pages = _count_bits(dumpable) if len(dumpable) == half else -1
    descs = _read(f, desc_off, max(n_pages, 0) * 24)
    if n_pages < 0 or len(descs) < n_pages * 24:
        raise InputError(f"{path} is truncated: {size} bytes, its page descriptors end past that",
                         "copy the dump again")
    data_start = desc_off + n_pages * 24
    end, bad = _page_descriptors(descs, n_pages, data_start, block_size)
    if bad is not None:
        off, sz = struct.unpack_from("<qI", descs, bad * 24)
        raise _damaged(path, f"descriptor {bad} of {n_pages}: offset {off:#x}, size {sz} "
                             f"in a file of {size} bytes", "page descriptor")
    if end > size:
        what = " (makedumpfile marked it incomplete: the disk was full)" if status & KDUMP_INCOMPLETE else ""
        raise InputError(f"{path} is truncated: {size} of {end} bytes present{what}", "copy the dump again")
    return CoreFile(path, "kdump", size, machine, utsname[2] or None)


def read_vmcoreinfo_file(path: str | os.PathLike) -> str:
    """The text of a VMCOREINFO file (``--vmcoreinfo``), checked.

    :raises InputError: missing, not a regular file, binary, too large, or without OSRELEASE=
    :raises AccessError: not readable by this user
    """
    p = Path(path)
    what = f"vmcoreinfo file {p}"
    try:
        st = p.stat()
    except OSError as e:
        raise file_error(e, what) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} is {_file_kind(st.st_mode)}, not a VMCOREINFO text",
                         "pass the capture kernel's vmcoreinfo saved beside the dump")
    try:
        with open(p, "rb") as f:
            data = f.read(VMCOREINFO_MAX + 1)
    except OSError as e:
        raise file_error(e, what) from None
    if len(data) > VMCOREINFO_MAX:
        raise InputError(f"{p} is not a VMCOREINFO text (over {VMCOREINFO_MAX} bytes)",
                         "pass the capture kernel's vmcoreinfo saved beside the dump")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{p} is not a VMCOREINFO text (binary data)",
                         "pass the capture kernel's vmcoreinfo saved beside the dump") from None
    if "OSRELEASE=" not in text:
        raise InputError(f"{p} is not a VMCOREINFO text (no OSRELEASE= line)",
                         "pass the capture kernel's vmcoreinfo saved beside the dump")
    return text


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def inspect_core_file(path: str | os.PathLike) -> CoreFile:
    """Check that path is a complete, readable kernel dump and say what kind.

    Never blocks: a FIFO, socket or device is refused before it is opened.

    :raises InputError: missing, a directory or other non-regular file, empty, truncated,
        damaged, from an unsupported architecture, or not a kernel dump
    :raises AccessError: not readable by this user
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise file_error(e, str(path), permission_fix="make the directories above it readable, or run as "
                         "their owner") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a directory, not a dump", "pass the vmcore file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is {_file_kind(st.st_mode)}, not a dump file",
                         "save the dump to a file first (makedumpfile -F output: makedumpfile -R)")
    try:
        f = open(path, "rb")
    except PermissionError:
        raise AccessError(f"{path}: permission denied", "make it readable or run as its owner") from None
    with f:
        size = os.fstat(f.fileno()).st_size
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
    raise NotADump(f"{path} is not a kernel dump (neither an ELF core nor kdump-compressed)",
                     "pass a vmcore saved by kdump/makedumpfile or QEMU")
