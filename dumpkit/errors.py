"""User-facing errors: one line saying what is wrong and what to do, and an exit code."""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "AccessError",
    "AnalysisError",
    "ConnectionFailed",
    "DebugInfoError",
    "DumpkitError",
    "InputError",
    "Interrupted",
    "OutputError",
    "UsageError",
    "file_error",
]


class DumpkitError(Exception):
    """Base of every error dumpkit reports to a user instead of a traceback.

    :param what: what is wrong, naming the input
    :param fix: what the user can do about it
    """

    exit_code = 1

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}; {self.fix}" if self.fix else self.what


class InputError(DumpkitError):
    """An input (dump, log, VMCOREINFO file) is missing, empty, truncated, damaged, not a
    regular file, or not what it should be."""

    exit_code = 3


class DebugInfoError(DumpkitError):
    """No debug file found, or one that does not match the kernel (build-id)."""

    exit_code = 4


class AccessError(DumpkitError):
    """Permission denied: /proc/kcore without root, an unreadable file or directory."""

    exit_code = 5


class ConnectionFailed(DumpkitError):
    """A QEMU QMP socket that is absent or does not answer."""

    exit_code = 6


class AnalysisError(DumpkitError):
    """The dump opened but the kernel's data could not be read (corrupted lists, pages missing)."""

    exit_code = 7


class UsageError(DumpkitError):
    """Options that do not go together (exit 2, like any usage error argparse finds)."""

    exit_code = 2


class OutputError(DumpkitError):
    """The output could not be written (missing directory, no permission, disk full); never
    the dump's fault."""

    exit_code = 8


class Interrupted(DumpkitError):
    """Ctrl-C (SIGINT); batch commands keep what finished."""

    exit_code = 130


EXIT_CODES = {
    0: "success",
    1: "some inputs failed (batch commands)",
    2: "usage error (bad command line)",
    3: "input missing, empty, truncated, damaged or not a kernel dump (dump, log or --vmcoreinfo file)",
    4: "debug info missing or not matching the dumped kernel",
    5: "permission denied (an unreadable file or directory, /proc/kcore without root)",
    6: "QEMU QMP socket absent or not answering",
    7: "kernel data in the dump could not be read",
    8: "output could not be written (missing directory, no permission, disk full)",
    130: "interrupted (Ctrl-C); triage keeps the rows of the dumps that finished",
}


def file_error(e: OSError, name: str, directory_fix: str = "pass the file inside it",
               permission_fix: str = "make it readable") -> DumpkitError:
    """The user-facing error for an input file that could not be stat'ed, opened or read:
    permission denied (exit 5), else missing, a directory or another OS error (exit 3).

    :param name: the input as the message names it ("capture log /var/crash/…/dmesg")
    """
    if isinstance(e, PermissionError):
        return AccessError(f"{name}: permission denied", permission_fix)
    if isinstance(e, FileNotFoundError):
        return InputError(f"{name}: no such file", "check the path")
    if isinstance(e, IsADirectoryError):
        return InputError(f"{name} is a directory", directory_fix)
    return InputError(f"{name}: {e.strerror or e}", "check the path")
