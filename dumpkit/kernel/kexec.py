"""kexec and crashkernel facts: the loaded crash image and the memory reserved for it."""

from __future__ import annotations

import drgn

from dumpkit.kernel.layout import has_member

__all__ = ["crash_image", "crash_resource", "crashk_cma_ranges", "kimage_cmdline_kept",
           "kimage_elf_load_addr", "kimage_file_mode", "kimage_segments"]


def crash_image(prog: drgn.Program) -> drgn.Object | None:
    """``kexec_crash_image`` (``struct kimage *``), or None when no capture kernel is loaded.

    :raises LookupError: the kernel was built without CONFIG_KEXEC_CORE
    """
    image = prog["kexec_crash_image"]
    return image if image else None


def crash_resource(prog: drgn.Program, name: str = "crashk_res") -> tuple[int, int] | None:
    """A crashkernel reservation (``crashk_res``, or ``crashk_low_res`` for the low part of
    crashkernel=X,high) as inclusive (start, end), or None when nothing is reserved
    (an empty resource has end <= start).

    :raises LookupError: the kernel has no such variable
    """
    res = prog[name]
    start, end = res.start.value_(), res.end.value_()
    return (start, end) if end > start else None


def crashk_cma_ranges(prog: drgn.Program) -> tuple[tuple[int, int], ...]:
    """The crashkernel=X,cma ranges as inclusive (start, end) pairs (``crashk_cma_ranges``
    and ``crashk_cma_cnt``, new in v6.17).

    :raises LookupError: a kernel before 6.17 (no such variables)
    """
    ranges = prog["crashk_cma_ranges"]
    count = min(max(prog["crashk_cma_cnt"].value_(), 0), len(ranges))
    return tuple((ranges[i].start.value_(), ranges[i].end.value_()) for i in range(count))


def kimage_file_mode(image: drgn.Object) -> bool:
    """Whether kexec_file_load loaded the image (else kexec_load).

    ``kimage.file_mode`` came with kexec_file_load itself (cb1052581e2b, v3.17): a kernel
    without it has only kexec_load.
    """
    return bool(image.file_mode) if has_member(image.prog_, "struct kimage", "file_mode") else False


def kimage_elf_load_addr(image: drgn.Object) -> int | None:
    """Where kexec_file_load put the ELF core header, or None.

    ``elf_load_addr`` exists whenever CONFIG_KEXEC_FILE is on, but only kexec_file_load
    sets it: a capture kernel loaded with kexec_load (``kexec -p`` without ``-s``) leaves 0.
    """
    if not has_member(image.prog_, "struct kimage", "elf_load_addr"):
        return None
    return image.elf_load_addr.value_() or None


def kimage_segments(image: drgn.Object) -> tuple[tuple[int, int], ...]:
    """(physical start, size) of each segment of a loaded image (both load calls record
    them), bounded by the array's length."""
    n = min(image.nr_segments.value_(), len(image.segment))
    return tuple((image.segment[i].mem.value_(), image.segment[i].memsz.value_()) for i in range(n))


def kimage_cmdline_kept(image: drgn.Object) -> bool:
    """Whether this kernel's ``struct kimage`` can hold the image's command line at all
    (``cmdline_buf``: CONFIG_KEXEC_FILE only)."""
    return has_member(image.prog_, "struct kimage", "cmdline_buf")
