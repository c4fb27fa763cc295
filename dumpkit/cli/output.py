"""The output layer of the command line: standard output that fails as the output (exit 8)
or ends quietly when its reader goes away (exit 0), and the formats records print in.

A command that prints records builds one :class:`Records` (its text, and one or more of:
a JSON-able object, a DataFrame, or the JSON/CSV text itself) and takes one ``--format``
option (:func:`add_format`), with today's flags (``--json``, ``--csv``, ``--table``) as its
shorthands. :data:`FORMATS` is the one table of formats; which of them a command offers
follows from what its :class:`Records` gives (:meth:`Records.formats`). A new format is a
row of :data:`FORMATS` and a method of :class:`Records` deriving it; every command whose
records give what it needs gets it.

``triage`` writes its rows as they come, through :class:`dumpkit.triage.RowWriter`, in
:data:`TRIAGE_FORMATS`; its ``--format`` is the same option.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys

from dumpkit.errors import OutputError

__all__ = ["FORMATS", "TRIAGE_FORMATS", "Format", "Records", "add_format", "emit", "plain", "quiet_stdout", "render",
           "settle_format", "settle_stdout", "writing", "writing_stdout"]


# --- standard output ------------------------------------------------------------------------

@contextlib.contextmanager
def writing(where: str):
    """Errors writing output are the output's (exit 8), never the dump's; a closed pipe is
    passed on to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputError(f"writing {where} failed: {e.strerror or e}",
                          "free space on that disk or write elsewhere") from None


@contextlib.contextmanager
def writing_stdout():
    """:func:`writing` for standard output. When writing fails (a full disk, an I/O
    error) the bytes Python's buffered stdout still holds would be flushed again at
    interpreter exit, fail again, print "Exception ignored ..." and turn the exit code
    into 120; so stdout is pointed at /dev/null first, and the error stays the one line
    and exit 8. (Unbuffered stdout, PYTHONUNBUFFERED=1, keeps nothing and never showed it.)"""
    try:
        with writing("standard output"):
            yield
    except OutputError:
        quiet_stdout()
        raise


def emit(text: str) -> None:
    """Print ``text`` (ending in one newline) on standard output and flush it."""
    with writing_stdout():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


def quiet_stdout() -> None:
    """After a closed pipe or a failed write: point stdout at /dev/null so the
    interpreter's flush at exit does not report the pipe or the full disk again (Python
    docs, "Note on SIGPIPE"); that failure would make the exit code 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def settle_stdout() -> None:
    """Before an error exit: flush what stdout still holds; if that fails too (the error
    may be that very disk), drop it (:func:`quiet_stdout`) so that the interpreter's own
    flush at exit cannot fail and change the exit code to 120."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        quiet_stdout()


# --- formats --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Format:
    """An output format: its name (the ``--format`` value and the :class:`Records` method
    that renders it), the methods of which a command's records must give one to offer it,
    and its shorthand flag."""

    name: str
    needs: tuple[str, ...]
    flag: str | None
    help: str


FORMATS = {f.name: f for f in (
    Format("text", ("text",), "--table", "text for people"),
    Format("json", ("data", "json"), "--json", "JSON: every field"),
    Format("csv", ("frame", "csv"), "--csv", "CSV, one row per record"),
)}
# what dumpkit.triage.RowWriter writes, as the rows come
TRIAGE_FORMATS = ("csv", "json", "jsonl", "parquet")


def plain(obj) -> dict:
    """A record (a dataclass, or any object) as a plain dict, for JSON and CSV rows."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(vars(obj))


class Records:
    """What a command prints, rendered in the format asked for. A subclass gives
    :meth:`text` and any of :meth:`data` (JSON), :meth:`frame` (CSV) or, where its
    rendering is its own, :meth:`json` / :meth:`csv` themselves."""

    def text(self) -> str:
        raise NotImplementedError

    def data(self):
        """The records as one JSON-able object."""
        raise NotImplementedError

    def frame(self):
        """The records as a pandas DataFrame, one row each (its index written when named)."""
        raise NotImplementedError

    def json(self) -> str:
        return json.dumps(self.data(), indent=1, default=str)

    def csv(self) -> str:
        frame = self.frame()
        return frame.to_csv(index=frame.index.name is not None)

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """The formats these records can be printed in: those whose needs they give."""
        return tuple(f.name for f in FORMATS.values()
                     if any(getattr(cls, m) is not getattr(Records, m) for m in f.needs))


def render(records: Records, fmt: str) -> str:
    """``records`` as text in format ``fmt`` (one of ``records.formats()``)."""
    return getattr(records, FORMATS[fmt].name)()


def add_format(parser: argparse.ArgumentParser, formats: tuple[str, ...], default: str = "text",
               helps: dict[str, str] | None = None, flags: tuple[str, ...] | None = None,
               format_help: str | None = None, metavar: str | None = "FORMAT"):
    """The one ``--format`` option of a command, with its shorthands (``--json``,
    ``--csv``, ``--table`` for the formats it offers; ``flags`` names which, default all
    but ``--table``), in one mutually exclusive group, which is returned so that a command
    can add its own views to it (``pci --tree``). ``helps`` overrides a shorthand's help,
    ``format_help`` the option's (``metavar``: None shows the choices).
    Resolved to one ``args.format`` by :func:`settle_format`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--format", choices=formats, default=None, metavar=metavar,
                       help=format_help or f"{', '.join(formats)} (default: {default})")
    wanted = flags if flags is not None else tuple(FORMATS[f].flag for f in formats
                                                   if f in FORMATS and f != "text")
    for name in formats:
        flag = FORMATS[name].flag if name in FORMATS else None
        if flag is not None and flag in wanted:
            group.add_argument(flag, dest="format", action="store_const", const=name, default=None,
                               help=(helps or {}).get(flag, f"--format {name}: {FORMATS[name].help}"))
    parser.set_defaults(format_default=default)
    return group


def settle_format(args: argparse.Namespace) -> None:
    """``args.format``: the one given (``--format`` or a shorthand), else the command's default."""
    if hasattr(args, "format_default"):
        args.format = getattr(args, "format", None) or args.format_default
        del args.format_default
