"""Triage output: files written beside no input, under a lock, as rows arrive (CSV,
JSON, JSONL), so an interruption keeps every finished row."""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from dumpkit.triage.rows import COLUMNS

__all__ = ["OutputLock", "RowWriter", "check_output"]

def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that output can be written: its directory exists and is
    writable, it is not a directory, and it is none of the inputs.

    :raises OutputError: with what is wrong
    """
    from dumpkit.errors import OutputError

    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: directory {parent} does not exist", "create it first")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory", "give a file name")
    if out.exists():
        for p in inputs:
            try:
                if os.path.samefile(out, p):
                    raise OutputError(f"cannot write {out}: it is one of the inputs", "give another file name")
            except OSError:
                continue
        if not os.access(out, os.W_OK):
            raise OutputError(f"cannot write {out}: permission denied", "choose a writable location")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: directory {parent} is not writable", "choose a writable location")
    return out


def _plain(row: dict) -> dict:
    return {c: row.get(c) for c in COLUMNS}


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _regular_or_new(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


class OutputLock:
    """One writer per output file: an exclusive ``flock`` on ``.NAME.lock`` beside it,
    removed again when released (re-checked after locking, so that a run that locked a
    lock file just removed by the previous one tries again)."""

    def __init__(self, output: Path):
        import fcntl

        from dumpkit.errors import OutputError

        self.path = output.with_name(f".{output.name}.lock")
        for _ in range(8):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write {output}: {e.strerror}", "choose a writable location") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"cannot write {output}: another dumpkit run is writing it",
                                  "wait for that run, or give another output") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)
        raise OutputError(f"cannot write {output}: its lock file {self.path} keeps changing", "try again")

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


class RowWriter:
    """Writes triage rows as they come: CSV (header first), JSON (an array, closed at the
    end even after an interruption), JSON lines, or Parquet (written at the end from the
    rows kept in ``OUTPUT.partial.jsonl`` beside it, which stays if that fails).

    A file output is written to a temporary file beside it and renamed over it when
    closed, under an :class:`OutputLock`: a failed run leaves the output as it was, an
    interrupted one a complete file of the rows finished, and two runs never mix rows.

    :param output: a file, or None for stdout (not for parquet)
    :raises OutputError: the output cannot be created, or another run is writing it
    """

    def __init__(self, output: str | os.PathLike | None, fmt: str):
        from dumpkit.errors import OutputError, UsageError

        self.format = fmt
        self.output = Path(output) if output is not None else None
        self.rows: list[dict] = []
        self.partial: Path | None = None
        self._first = True
        self._lock: OutputLock | None = None
        self._tmp: Path | None = None
        if fmt == "parquet" and self.output is None:
            raise UsageError("--format parquet needs -o FILE", "give an output file")
        # a regular file (or a new one) is replaced whole at the end, through its links;
        # a device or FIFO given as the output (/dev/stdout, a pipe) is written directly
        real = Path(os.path.realpath(self.output)) if self.output is not None else None
        whole = real is not None and _regular_or_new(self.output)
        if whole:
            self.output = real
            self._lock = OutputLock(real)
        if fmt == "parquet":
            target = self.partial = self.output.with_name(self.output.name + ".partial.jsonl")
        elif whole:
            target = self._tmp = real.with_name(f".{real.name}.{os.getpid()}.tmp")
        else:
            target = self.output
        try:
            self._f = open(target, "w", newline="") if target is not None else sys.stdout
        except OSError as e:
            self._release()
            raise OutputError(f"cannot write {target}: {e.strerror}", "choose a writable location") from None
        self._guard(self._begin)

    def _release(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()

    def _guard(self, fn, *args) -> None:
        from dumpkit.errors import OutputError

        try:
            fn(*args)
            if not self._f.closed:
                self._f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            where = self.partial or self.output or "standard output"
            if self._f is not sys.stdout:
                try:
                    self._f.close()
                except OSError:
                    pass            # the disk is still full: what is written goes away below
            self._release()
            raise OutputError(f"writing {where} failed: {e.strerror}", "free space or choose another location") from None

    def _begin(self) -> None:
        if self.format == "csv":
            self._csv = csv.DictWriter(self._f, COLUMNS, extrasaction="ignore", lineterminator="\n")
            self._csv.writeheader()
        elif self.format == "json":
            self._f.write("[")

    def _write(self, row: dict) -> None:
        row = _plain(row)
        if self.format == "csv":
            self._csv.writerow(row)
        elif self.format == "json":
            self._f.write(("\n" if self._first else ",\n") + json.dumps(row, default=str))
        else:
            self._f.write(json.dumps(row, default=str) + "\n")
        self._first = False

    def write(self, row: dict) -> None:
        self.rows.append(row)
        self._guard(self._write, row)

    def close(self) -> None:
        """Finish the output with the rows written so far (also after an interruption)."""
        from dumpkit.errors import OutputError

        if self._f is None:
            return
        if self.format == "json":
            self._guard(self._f.write, "\n]\n")
        if self._f is not sys.stdout:
            self._guard(self._f.close)
        self._f = None
        try:
            if self.format == "parquet":
                self._write_parquet()
            elif self._tmp is not None:
                try:
                    os.replace(self._tmp, self.output)
                except OSError as e:
                    raise OutputError(f"writing {self.output} failed: {e.strerror}",
                                      "choose a writable location") from None
        finally:
            self._release()

    def _write_parquet(self) -> None:
        import pandas as pd

        from dumpkit.errors import OutputError

        frame = pd.DataFrame([{c: _finite(v) for c, v in _plain(r).items()} for r in self.rows], columns=COLUMNS)
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.output)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"writing {self.output} failed: {e.strerror}; the rows are in {self.partial}",
                              "free space or choose another location") from None
        self.partial.unlink(missing_ok=True)

    @property
    def where(self) -> str:
        return str(self.output) if self.output is not None else "standard output"
