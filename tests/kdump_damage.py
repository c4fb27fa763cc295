"""Damage a copy of a kdump-compressed vmcore at a chosen guest-physical page, through the
dump's own page descriptors (makedumpfile's disk_dump_header, kdump_sub_header, the two
page bitmaps and one page_desc per dumped page): the page's compressed data gets a byte
flipped, so it no longer decompresses, and nothing else changes."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

PAGE_DESC = struct.Struct("<qIIQ")      # offset, size, flags, page_flags
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED = DUMP_DH_COMPRESSED_ZLIB | 0x2 | 0x4 | 0x20   # zlib, lzo, snappy, zstd


def _layout(f) -> dict:
    head = f.read(4096)
    if head[:8] != b"KDUMP   ":
        raise ValueError("not a kdump-compressed file")
    block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<iiII", head, 428)
    f.seek(block_size)
    sub = f.read(block_size)
    version, = struct.unpack_from("<i", head, 8)
    if version >= 6:
        max_mapnr, = struct.unpack_from("<Q", sub, 64)   # kdump_sub_header.max_mapnr_64
    bitmap_off = block_size * (1 + sub_hdr_size)
    desc_off = bitmap_off + block_size * bitmap_blocks
    return {"block_size": block_size, "bitmap_off": bitmap_off, "bitmap_len": block_size * bitmap_blocks,
            "desc_off": desc_off, "max_mapnr": max_mapnr}


def page_descriptor(path: Path, phys: int) -> tuple[int, int, int, int] | None:
    """(descriptor file offset, data offset, data size, flags) of the page holding ``phys``,
    or None if the dump does not hold that page."""
    with open(path, "rb") as f:
        lay = _layout(f)
        pfn = phys // 4096
        half = lay["bitmap_len"] // 2
        f.seek(lay["bitmap_off"] + half)      # the second bitmap: pages written to the dump
        bitmap = f.read(half)
        if not bitmap[pfn // 8] >> (pfn % 8) & 1:
            return None
        index = sum(bin(b).count("1") for b in bitmap[:pfn // 8]) + bin(bitmap[pfn // 8] & ((1 << (pfn % 8)) - 1)).count("1")
        pos = lay["desc_off"] + index * PAGE_DESC.size
        f.seek(pos)
        offset, size, flags, _pf = PAGE_DESC.unpack(f.read(PAGE_DESC.size))
        return pos, offset, size, flags


def _copy_with_page(src: Path, dst: Path, phys: int) -> tuple[int, int, int, int]:
    """Copy src to dst; the descriptor of the page holding ``phys`` (see page_descriptor).

    :raises ValueError: the page is not in the dump
    """
    shutil.copy(src, dst)
    found = page_descriptor(dst, phys)
    if found is None:
        raise ValueError(f"page {phys:#x} is not in {src}")
    return found


def damage_page(src: Path, dst: Path, phys: int) -> None:
    """Copy src to dst with the page holding ``phys`` made undecompressable. A page stored
    uncompressed gets its descriptor marked zlib-compressed as well (a flipped byte alone
    would change its data silently instead of failing).

    :raises ValueError: the page is not in the dump
    """
    found = _copy_with_page(src, dst, phys)
    pos, offset, size, flags = found
    with open(dst, "r+b") as f:
        if not flags & DUMP_DH_COMPRESSED:
            f.seek(pos)
            f.write(PAGE_DESC.pack(offset, size, DUMP_DH_COMPRESSED_ZLIB, 0))
        # zlib: the 2-byte header and the first deflate block header decide everything
        for at in (offset, offset + 1, offset + 2):
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0xFF]))


def exclude_page(src: Path, dst: Path, phys: int) -> None:
    """Copy src to dst with the page holding ``phys`` left out as makedumpfile leaves out a
    page its dump level excludes: its bit cleared in the second bitmap (pages written) and
    its descriptor removed, the later descriptors moved up one. Page data offsets are
    absolute in the file, so the data stays where it is.

    :raises ValueError: the page is not in the dump
    """
    found = _copy_with_page(src, dst, phys)
    pos = found[0]
    with open(dst, "r+b") as f:
        lay = _layout(f)
        half = lay["bitmap_len"] // 2
        pfn = phys // 4096
        at = lay["bitmap_off"] + half + pfn // 8
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte & ~(1 << (pfn % 8)) & 0xFF]))
        f.seek(lay["bitmap_off"] + half)
        count = sum(bin(b).count("1") for b in f.read(half))   # descriptors after the change
        end = lay["desc_off"] + (count + 1) * PAGE_DESC.size
        f.seek(pos + PAGE_DESC.size)
        rest = f.read(end - pos - PAGE_DESC.size)
        f.seek(pos)
        f.write(rest + bytes(PAGE_DESC.size))


def rewrite_page(src: Path, dst: Path, phys: int, change) -> None:
    """Copy src to dst with the page holding ``phys`` replaced by ``change(page bytes)``:
    the new page is appended zlib-compressed and its descriptor pointed at it (page data
    offsets are absolute, so nothing else moves). A flipped bit in a kernel table, as a
    bad DIMM or a stray write leaves it.

    :raises ValueError: the page is not in the dump
    """
    import zlib

    found = _copy_with_page(src, dst, phys)
    pos, offset, size, flags = found
    with open(dst, "r+b") as f:
        f.seek(offset)
        data = f.read(size)
        page = zlib.decompress(data) if flags & DUMP_DH_COMPRESSED_ZLIB else data
        if flags & DUMP_DH_COMPRESSED and not flags & DUMP_DH_COMPRESSED_ZLIB:
            raise ValueError(f"page {phys:#x} is compressed with a method other than zlib")
        new = zlib.compress(change(page))
        end = f.seek(0, 2)
        f.write(new)
        f.seek(pos)
        f.write(PAGE_DESC.pack(end, len(new), DUMP_DH_COMPRESSED_ZLIB, 0))
