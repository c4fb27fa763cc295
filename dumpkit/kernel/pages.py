"""Page-frame facts read from the memory map (``struct page``), which a vmcore keeps even
where it leaves the pages themselves out (the crashkernel CMA ranges)."""

from __future__ import annotations

import struct

import drgn

__all__ = ["GUP_PIN_COUNTING_BIAS", "dma_pinned_pages"]

# include/linux/mm.h: a FOLL_PIN pin of a small folio adds this to its refcount (v5.7,
# "mm/gup: track FOLL_PIN pages"); a pinned large folio counts its pins in _pincount instead
GUP_PIN_COUNTING_BIAS = 1 << 10
MAX_PAGES = 1 << 22             # 16 GiB of page frames per call
CHUNK = 1 << 14                 # page frames read at a time


def dma_pinned_pages(prog: drgn.Program, start: int, end: int) -> int:
    """How many small pages in the physical range [start, end] were pinned for DMA
    (``folio_maybe_dma_pinned()``'s test on small folios: refcount >= GUP_PIN_COUNTING_BIAS):
    a lower bound, large folios' pins not counted.

    :raises drgn.FaultError: the memory map of the range is not in the dump
    """
    from drgn.helpers.linux.mm import pfn_to_page

    page_t = prog.type("struct page")
    size, off = drgn.sizeof(page_t), drgn.offsetof(page_t, "_refcount")
    first, last = start >> 12, min(end >> 12, (start >> 12) + MAX_PAGES - 1)
    pinned = 0
    for pfn in range(first, last + 1, CHUNK):
        n = min(CHUNK, last + 1 - pfn)
        raw = prog.read(pfn_to_page(prog, pfn).value_(), n * size)
        pinned += sum(1 for i in range(n) if struct.unpack_from("<i", raw, i * size + off)[0] >= GUP_PIN_COUNTING_BIAS)
    return pinned
