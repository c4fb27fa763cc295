"""Collect the kdump state of a kernel: plain data, reasons for what cannot be known."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

from dumpkit.kernel import kexec
from dumpkit.kernel.pages import dma_pinned_pages

__all__ = ["KdumpState", "collect_kdump"]

ELFCORE_ADDR_MAX = (1 << 64) - 1   # not a kdump kernel
ELFCORE_ADDR_ERR = (1 << 64) - 2   # set by vmcore_init() once /proc/vmcore is built


@dataclass
class KdumpState:
    """What the kernel in the dump knew about kdump.

    :param capture_kernel: this kernel is a kdump capture kernel (``is_kdump_kernel()``)
    :param elfcorehdr: ``"unset"``, ``"consumed"`` (/proc/vmcore set up) or the address
    :param crash_kernel_loaded: a capture kernel was loaded (``kexec_crash_image``)
    :param crash_kernel_cmdline: its command line when the kernel kept it
    """

    capture_kernel: bool | None = None
    elfcorehdr: str | None = None
    reset_devices: bool | None = None
    command_line: str | None = None
    crash_kernel_loaded: bool | None = None
    crash_kernel_file_mode: bool | None = None
    crash_kernel_cmdline: str | None = None
    crash_kernel_reserved: tuple[int, int] | None = None
    # the other memory a capture kernel may be handed: the low reservation of
    # crashkernel=X,high (crashk_low_res) and the CMA ranges of crashkernel=X,cma (6.17+)
    crash_kernel_low: tuple[int, int] | None = None
    crash_kernel_cma: tuple[tuple[int, int], ...] = ()
    # pages of those CMA ranges pinned for DMA at the crash (a lower bound: small pages only)
    crash_kernel_cma_pinned: int | None = None
    # where the loaded capture kernel's pieces sit: (physical start, size) per segment of
    # kexec_crash_image; kexec_load and kexec_file_load both record them
    crash_kernel_segments: tuple[tuple[int, int], ...] = ()
    # the ELF core header's address; set by kexec_file_load only (None otherwise)
    crash_kernel_elf_load_addr: int | None = None
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def crash_kernel_call(self) -> str | None:
        """"kexec_file_load" or "kexec_load": the system call that loaded the capture kernel."""
        if self.crash_kernel_file_mode is None:
            return None
        return "kexec_file_load" if self.crash_kernel_file_mode else "kexec_load"

    @property
    def crash_memory(self) -> tuple[tuple[int, int], ...]:
        """Every range (inclusive ends) a capture kernel may be given as its RAM."""
        ranges = [r for r in (self.crash_kernel_reserved, self.crash_kernel_low) if r]
        return tuple(ranges) + self.crash_kernel_cma

    @property
    def capture_has_reset_devices(self) -> bool | None:
        """Whether the loaded capture kernel would get reset_devices, when known."""
        if self.crash_kernel_cmdline is None:
            return None
        return "reset_devices" in self.crash_kernel_cmdline.split()


def _crash_image(prog: drgn.Program, state: KdumpState) -> None:
    try:
        image = kexec.crash_image(prog)
    except KeyError:
        state.unknown["crash_kernel_loaded"] = "kernel built without CONFIG_KEXEC_CORE"
        return
    state.crash_kernel_loaded = image is not None
    if image is None:
        state.unknown["crash_kernel_cmdline"] = "no capture kernel loaded"
        return
    state.crash_kernel_file_mode = kexec.kimage_file_mode(image)
    state.crash_kernel_segments = kexec.kimage_segments(image)
    state.crash_kernel_elf_load_addr = kexec.kimage_elf_load_addr(image)
    if not kexec.kimage_cmdline_kept(image):
        state.unknown["crash_kernel_cmdline"] = "kernel built without CONFIG_KEXEC_FILE"
    elif image.cmdline_buf and image.cmdline_buf_len:
        raw = prog.read(image.cmdline_buf.value_(), image.cmdline_buf_len.value_())
        state.crash_kernel_cmdline = raw.split(b"\0")[0].decode(errors="replace")
    elif state.crash_kernel_file_mode:
        state.unknown["crash_kernel_cmdline"] = ("loaded with kexec_file_load, which frees its copy "
                                                 "after loading (kimage_file_post_load_cleanup)")
    else:
        state.unknown["crash_kernel_cmdline"] = "loaded with kexec_load, which keeps no copy"


def collect_kdump(prog: drgn.Program) -> KdumpState:
    """Read the kdump-related globals of a kernel (once per program: ``prog.cache``).

    :param prog: a kernel program with debug info
    """
    cached = prog.cache.get("dumpkit.kdump")
    if cached is None:
        cached = prog.cache["dumpkit.kdump"] = _collect(prog)
    return cached


def _collect(prog: drgn.Program) -> KdumpState:
    state = KdumpState()

    def attempt(name, fn):
        try:
            return fn()
        except (KeyError, LookupError, AttributeError, drgn.FaultError, drgn.ObjectAbsentError) as e:
            state.unknown[name] = f"{type(e).__name__}: {e}"
            return None

    addr = attempt("capture_kernel", lambda: prog["elfcorehdr_addr"].value_())
    if addr is not None:
        state.capture_kernel = addr != ELFCORE_ADDR_MAX
        state.elfcorehdr = ("unset" if addr == ELFCORE_ADDR_MAX else
                            "consumed" if addr == ELFCORE_ADDR_ERR else hex(addr))
    rd = attempt("reset_devices", lambda: prog["reset_devices"].value_())
    state.reset_devices = None if rd is None else bool(rd)
    state.command_line = attempt("command_line", lambda: prog["saved_command_line"].string_().decode())
    state.crash_kernel_reserved = attempt("crash_kernel_reserved", lambda: kexec.crash_resource(prog, "crashk_res"))
    state.crash_kernel_low = _optional(state, "crash_kernel_low", lambda: kexec.crash_resource(prog, "crashk_low_res"))
    state.crash_kernel_cma = _optional(state, "crash_kernel_cma", lambda: kexec.crashk_cma_ranges(prog)) or ()
    if state.crash_kernel_cma:
        state.crash_kernel_cma_pinned = attempt(
            "crash_kernel_cma_pinned", lambda: sum(dma_pinned_pages(prog, a, b) for a, b in state.crash_kernel_cma))
    attempt("crash_kernel_loaded", lambda: _crash_image(prog, state))
    return state


def _optional(state: KdumpState, name: str, fn):
    """A global that older kernels lack: absent is no reason, unreadable is."""
    try:
        return fn()
    except KeyError:
        return None
    except (LookupError, AttributeError, drgn.FaultError, drgn.ObjectAbsentError) as e:
        state.unknown[name] = f"{type(e).__name__}: {e}"
        return None
