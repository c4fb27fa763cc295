"""Collect the kdump state of a kernel: plain data, reasons for what cannot be known."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn

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
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def capture_has_reset_devices(self) -> bool | None:
        """Whether the loaded capture kernel would get reset_devices, when known."""
        if self.crash_kernel_cmdline is None:
            return None
        return "reset_devices" in self.crash_kernel_cmdline.split()


def _crash_image(prog: drgn.Program, state: KdumpState) -> None:
    try:
        image = prog["kexec_crash_image"]
    except KeyError:
        state.unknown["crash_kernel_loaded"] = "kernel built without CONFIG_KEXEC_CORE"
        return
    state.crash_kernel_loaded = bool(image.read_())
    if not state.crash_kernel_loaded:
        state.unknown["crash_kernel_cmdline"] = "no capture kernel loaded"
        return
    if image.type_.type.has_member("file_mode"):
        state.crash_kernel_file_mode = bool(image.file_mode)
    if not image.type_.type.has_member("cmdline_buf"):
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
    """Read the kdump-related globals of a kernel.

    :param prog: a kernel program with debug info
    """
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
    res = attempt("crash_kernel_reserved", lambda: prog["crashk_res"])
    if res is not None and res.end.value_() > res.start.value_():
        state.crash_kernel_reserved = (res.start.value_(), res.end.value_())
    attempt("crash_kernel_loaded", lambda: _crash_image(prog, state))
    return state
