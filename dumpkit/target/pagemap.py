"""Which physical pages a dump file holds, and why one is missing.

A read that fails on a page the dump lacks has two very different causes: makedumpfile's
dump level excluded the page (by design: ``-d 31`` leaves out zero, cache, user and free
pages, and a makedumpfile older than the kernel can mistake a kernel page for one of
those), or the file is damaged. A kdump-compressed file says which: its first bitmap
marks the page frames that were RAM, its second the ones written, and its sub-header
keeps the dump level. An ELF vmcore from ``makedumpfile -E`` leaves excluded runs out of
its PT_LOAD segments and records no level."""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import drgn

from dumpkit.target.corefile import PT_LOAD, CoreFile, _elf_segments, _read

__all__ = ["DumpPages", "attach_dump_pages", "cma_reason", "crash_cma_range", "dump_level", "excluded_page_reason", "level_words", "missing_page_reason",
           "page_presence"]

PAGE_SHIFT = 12
# makedumpfile's dump level bits (its -d option)
LEVEL_BITS = {1: "zero", 2: "cache", 4: "private cache", 8: "user", 16: "free"}
MAX_BITMAP = 1 << 31   # 2 GiB of bitmap: 64 TiB of RAM per bitmap; a larger header is damage


@dataclass
class DumpPages:
    """Page presence of one dump file.

    :param format: "kdump" or "elf"
    :param dump_level: makedumpfile's -d of a kdump-compressed file (None for ELF)
    """

    path: Path
    format: str
    dump_level: int | None = None
    _ram: bytes = b""          # kdump: bitmap 1 (page frames that were RAM)
    _dumped: bytes = b""       # kdump: bitmap 2 (page frames written)
    _loads: tuple = ()         # elf: sorted (start pfn, end pfn) of PT_LOAD file contents

    def status(self, phys: int) -> str | None:
        """"present", "excluded" (RAM, but not written) or "not RAM"; None: cannot tell."""
        pfn = phys >> PAGE_SHIFT
        if self.format == "kdump":
            if pfn >> 3 >= len(self._ram):
                return None
            if not self._ram[pfn >> 3] >> (pfn & 7) & 1:
                return "not RAM"
            if pfn >> 3 < len(self._dumped) and self._dumped[pfn >> 3] >> (pfn & 7) & 1:
                return "present"
            return "excluded"
        i = bisect.bisect_right(self._loads, (pfn, float("inf"))) - 1
        if i >= 0 and self._loads[i][0] <= pfn < self._loads[i][1]:
            return "present"
        # between two segments: makedumpfile -E cut an excluded run out; outside them all
        # the page may as well be no RAM
        if self._loads and self._loads[0][0] <= pfn < self._loads[-1][1]:
            return "excluded"
        return None


def _kdump_pages(core: CoreFile) -> DumpPages:
    with open(core.path, "rb") as f:
        header = _read(f, 0, 464)
        block_size, sub_hdr_size, bitmap_blocks, _max_mapnr = struct.unpack_from("<iiII", header, 428)
        level = struct.unpack_from("<i", _read(f, block_size, 12), 8)[0]
        half = bitmap_blocks * block_size // 2
        if not 0 < half <= MAX_BITMAP:
            return DumpPages(core.path, "kdump", level)
        start = (1 + sub_hdr_size) * block_size
        return DumpPages(core.path, "kdump", level, _read(f, start, half), _read(f, start + half, half))


def dump_level(core: CoreFile | None) -> tuple[int | None, str | None]:
    """makedumpfile's dump level (-d) as a kdump-compressed file records it in its
    sub-header, else None and why."""
    if core is None:
        return None, "not a dump file"
    if core.format != "kdump":
        return None, f"a{'n' if core.format[0] in 'ae' else ''} {core.format} file does not record makedumpfile's -d"
    try:
        with open(core.path, "rb") as f:
            block_size = struct.unpack_from("<i", _read(f, 0, 464), 428)[0]
            level = struct.unpack_from("<i", _read(f, block_size, 12), 8)[0]
    except (OSError, struct.error):
        return None, "the kdump sub-header cannot be read"
    if not 0 <= level <= 31:
        return None, f"the kdump sub-header says dump level {level}, which is none"
    return level, None


def level_words(level: int) -> str:
    """What a dump level leaves out, in words ("zero, cache, private cache and free pages left out")."""
    names = [name for bit, name in LEVEL_BITS.items() if level & bit]
    if not names:
        return "every page kept"
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + " pages left out"


def _elf_pages(core: CoreFile) -> DumpPages:
    with open(core.path, "rb") as f:
        _t, _m, segments = _elf_segments(f, core.size, core.path)
        # _elf_segments gives no physical address: read it from the same headers
        phoff = struct.unpack_from("<Q", _read(f, 0, 64), 32)[0]
        phentsize = struct.unpack_from("<H", _read(f, 0, 64), 54)[0]
        loads = []
        for i, (p_type, _off, _va, filesz, _memsz) in enumerate(segments):
            if p_type == PT_LOAD and filesz:
                paddr = struct.unpack_from("<Q", _read(f, phoff + i * phentsize + 24, 8))[0]
                loads.append((paddr >> PAGE_SHIFT, (paddr + filesz) >> PAGE_SHIFT))
    return DumpPages(core.path, "elf", None, _loads=tuple(sorted(loads)))


def attach_dump_pages(prog: drgn.Program, core: CoreFile | None) -> None:
    """Remember the page presence of ``core`` for ``prog`` (read on first use)."""
    prog.cache["dumpkit.dump_file"] = core


def _read_pages(core: CoreFile | None) -> DumpPages | None:
    if core is None or core.format not in ("kdump", "elf"):
        return None
    try:
        return _kdump_pages(core) if core.format == "kdump" else _elf_pages(core)
    except (OSError, struct.error, ValueError):
        return None


def _dump_pages(prog: drgn.Program) -> DumpPages | None:
    pages = prog.cache.get("dumpkit.dump_pages")
    if pages is None:
        pages = _read_pages(prog.cache.get("dumpkit.dump_file"))
        if pages is not None:
            prog.cache["dumpkit.dump_pages"] = pages
    return pages


def _advice(level: int | None) -> str:
    if level is None:
        return ("re-capture with a lower dump level (makedumpfile -d 23 keeps user pages) or a makedumpfile "
                "that supports this kernel")
    kept = level & ~8 if level & 8 else level & 1
    names = [name for bit, name in LEVEL_BITS.items() if level & bit]
    what = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    return (f"-d {level} leaves out {what or 'no'} pages, and a makedumpfile older than the kernel can take "
            f"kernel pages for those: re-capture with -d {kept} or a makedumpfile that supports this kernel")


def crash_cma_range(prog: drgn.Program, phys: int) -> tuple[int, int] | None:
    """The crashkernel=X,cma range (6.17+) holding ``phys``, or None. The crashed kernel
    lent that memory to movable pages; a crash hands it to the capture kernel, and the
    vmcore leaves it out (it is not in the ELF core header)."""
    key = "dumpkit.crash_cma_ranges"
    if key not in prog.cache:
        from dumpkit.kernel.kexec import crashk_cma_ranges

        try:
            prog.cache[key] = crashk_cma_ranges(prog)
        except (KeyError, LookupError, AttributeError, drgn.FaultError):
            prog.cache[key] = ()
    return next(((a, b) for a, b in prog.cache[key] if a <= phys <= b), None)


def cma_reason(prog: drgn.Program, phys: int) -> str | None:
    """Why a page of a crashkernel CMA range is not in the dump, or None for other pages."""
    r = crash_cma_range(prog, phys)
    if r is None:
        return None
    return (f"page {phys & ~((1 << PAGE_SHIFT) - 1):#x} is not in this dump: it lies in the crashkernel CMA "
            f"range {r[0]:#x}-{r[1]:#x}, lent to the capture kernel (crashkernel=,cma), which the vmcore leaves "
            "out by design; not damage")


def missing_page_reason(prog: drgn.Program, phys: int) -> str | None:
    """Why the dump lacks the page at ``phys``, when its file says: a phrase for an error
    line, or None (the page is there, or the file cannot tell)."""
    return cma_reason(prog, phys) or _reason(_dump_pages(prog), phys)


def page_presence(prog: drgn.Program, phys: int) -> tuple[str | None, int | None]:
    """Whether the dump holds the page at ``phys`` ("present", "excluded", "not RAM",
    "capture CMA" for a page of a crashkernel CMA range, or None when its file cannot tell) and the dump level it was written with (None: not
    recorded, as in an ELF vmcore)."""
    pages = _dump_pages(prog)
    if crash_cma_range(prog, phys) is not None:
        return "capture CMA", pages.dump_level if pages else None
    return (pages.status(phys), pages.dump_level) if pages else (None, None)


EXCLUDED = re.compile(r"Excluded page: (0x[0-9a-fA-F]{1,16})")


def excluded_page_reason(error: Exception, core: CoreFile | None) -> str | None:
    """For a read error that escaped every collector: libkdumpfile names the physical
    page it found excluded ("Excluded page: 0x…"); say what that means for this file."""
    m = EXCLUDED.search(str(error))
    return _reason(_read_pages(core), int(m.group(1), 16)) if m else None


def _reason(pages: DumpPages | None, phys: int) -> str | None:
    status = pages.status(phys) if pages else None
    page = phys & ~((1 << PAGE_SHIFT) - 1)
    if status == "excluded":
        bitmap = "the kdump page bitmap says so" if pages.format == "kdump" else \
            "no segment of the ELF vmcore holds it"
        return (f"page {page:#x} is not in this dump: makedumpfile's dump level excluded it ({bitmap}), "
                f"not damage; {_advice(pages.dump_level)}")
    if status == "not RAM":
        return f"page {page:#x} is not RAM by this dump's memory map (device memory, or a damaged pointer)"
    return None
