"""Logs read once, in any form: a file, a pipe or FIFO (``<(zcat log.gz)``,
``/dev/fd/N``), standard input ("-"), plain or compressed (gzip, xz, zstd, bzip2: told by
their magic bytes, never by the name).

Every caller that needs a log's text goes through :func:`read_log`, or through a
:class:`LogCache` when one run may need the same log twice (a pipe can be read only
once), or is handed the :class:`LogText` already read. The bytes are decoded as UTF-8
with each undecodable byte replaced by U+FFFD: one bad byte costs that byte, never its
line. What is read is bounded (:data:`MAX_LOG_BYTES` of decompressed text).

Errors are :mod:`dumpkit.errors` ones with one line each: a missing file, a directory,
damaged compressed data with nothing readable, or a log over the bound are
:class:`~dumpkit.errors.InputError` (exit 3); an unreadable file is
:class:`~dumpkit.errors.AccessError` (exit 5). A compressed log that ends early (a log
copied while being written) gives the text up to there, with a warning in
:attr:`LogText.warnings`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from dumpkit.errors import InputError, file_error

__all__ = [
    "COMPRESSIONS",
    "MAX_LOG_BYTES",
    "LogCache",
    "LogText",
    "decode_log",
    "detect_compression",
    "grep_lines",
    "log_text",
    "read_log",
]

#: The most text one log may give, in bytes after decompression (1 GiB).
MAX_LOG_BYTES = 1 << 30

#: Compressed formats recognised, by their magic bytes at the start of the data.
COMPRESSIONS = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "zstd": b"\x28\xb5\x2f\xfd", "bzip2": b"BZh"}
_MAGIC_LEN = 10         # bzip2: "BZh", the block size digit and the first block's magic "1AY&SY"
_CHUNK = 1 << 20
_UNITS = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


@dataclass(frozen=True)
class LogText:
    """A log's text, read once, and where it came from.

    :ivar text: the decoded text (U+FFFD for each undecodable byte)
    :ivar path: the path as given ("-" for standard input)
    :ivar compression: "gzip", "xz", "zstd", "bzip2" or None
    :ivar size: bytes of text (after decompression)
    :ivar replaced: undecodable bytes replaced by U+FFFD
    :ivar warnings: what the reader had to put up with (compressed data ending early)
    """

    text: str
    path: str
    compression: str | None = None
    size: int = 0
    replaced: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        """The file name, as fault records give their source ("standard input" for "-")."""
        return "standard input" if self.path == "-" else Path(self.path).name

    def __str__(self) -> str:
        return self.text


def detect_compression(head: bytes) -> str | None:
    """The compressed format that data starting with ``head`` is in, by magic bytes, or None
    for anything else (plain text). ``head`` should be the first 10 bytes or all there is."""
    for kind, magic in COMPRESSIONS.items():
        if head.startswith(magic):
            if kind == "bzip2" and not (len(head) >= 10 and head[3:4].isdigit() and head[4:10] == b"1AY&SY"):
                continue        # text that merely starts with "BZh"
            return kind
    return None


def decode_log(data: bytes | bytearray) -> tuple[str, int]:
    """Decode a log's bytes as UTF-8, each undecodable byte becoming U+FFFD (its line and the
    bytes around it are kept).

    :return: the text and the number of bytes replaced
    """
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd")
    if replaced:
        replaced -= data.count("\ufffd".encode())       # U+FFFD that was in the log already
    return text, replaced


def read_log(path: str | os.PathLike, *, what: str = "log", max_bytes: int = MAX_LOG_BYTES) -> LogText:
    """Read a log exactly once: a regular file, a FIFO or pipe (``/dev/fd/N``), or standard
    input for "-"; decompress gzip, xz, zstd and bzip2 data (told by magic bytes);
    decode it (:func:`decode_log`).

    zstd needs the ``zstandard`` module or the ``zstd`` command; the error says so when
    neither is there.

    :param what: how errors name the log ("capture log")
    :param max_bytes: the most text accepted, after decompression
    :raises InputError: missing, a directory, over ``max_bytes``, damaged compressed data
        with nothing readable, zstd without a decompressor
    :raises AccessError: permission denied
    """
    shown = os.fspath(path)
    if shown == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None or stdin.closed:
            raise InputError(f"{what} \"-\": standard input is closed", "pipe the log in, or pass its file")
        return _read_stream(stdin, "-", "standard input", what, max_bytes)
    try:
        f = open(shown, "rb")
    except OSError as e:
        raise file_error(e, f"{what} {shown}", "pass the log file inside it") from None
    with f:
        return _read_stream(f, shown, shown, what, max_bytes)


def log_text(log: LogText | str | os.PathLike, *, what: str = "log") -> LogText:
    """``log`` itself when it was read already, else :func:`read_log` of it."""
    return log if isinstance(log, LogText) else read_log(log, what=what)


class LogCache:
    """Logs read at most once in a run, by the path as given: the second caller asking for
    ``/dev/fd/63`` gets the text the first one read, not an empty pipe.

    Not for long-lived processes whose files change: a cached path is never read again.
    """

    def __init__(self, max_bytes: int = MAX_LOG_BYTES):
        self.max_bytes = max_bytes
        self._logs: dict[str, LogText] = {}

    def read(self, path: str | os.PathLike, *, what: str = "log") -> LogText:
        """:func:`read_log` the first time a path is asked for; the same :class:`LogText` after."""
        key = os.fspath(path)
        if key not in self._logs:
            self._logs[key] = read_log(key, what=what, max_bytes=self.max_bytes)
        return self._logs[key]

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.fspath(path) in self._logs

    def __len__(self) -> int:
        return len(self._logs)


def grep_lines(text: str, keyword: str) -> Iterator[str]:
    """The lines of ``text`` (as :meth:`str.splitlines` cuts them) that contain ``keyword``,
    in order, found by ``str.find`` over the text: the time is linear in the text and the
    Python code runs only for lines that match."""
    n = len(text)
    i = text.find(keyword)
    while i >= 0:
        s = text.rfind("\n", 0, i) + 1
        e = text.find("\n", i)
        e = n if e < 0 else e
        for line in text[s:e].splitlines():
            if keyword in line:
                yield line
        i = text.find(keyword, e)


# --- reading -----------------------------------------------------------------------------

def _size(n: int) -> str:
    for unit, name in _UNITS:
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


class _Rewound(io.RawIOBase):
    """A stream whose first bytes were read already (to see the magic), given back first."""

    def __init__(self, head: bytes, f: BinaryIO):
        self._head, self._f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._f.read(len(b))
        b[:len(data)] = data
        return len(data)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = f.read(n - len(out))
        if not got:
            break
        out += got
    return out


def _read_stream(f: BinaryIO, path: str, shown: str, what: str, max_bytes: int) -> LogText:
    try:
        head = _read_exact(f, _MAGIC_LEN)
        kind = detect_compression(head)
        warnings: list[str] = []
        if kind is None:
            data = bytearray(head)
            while len(data) <= max_bytes:
                chunk = f.read(min(_CHUNK, max_bytes + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
        elif kind == "zstd":
            zstd = _zstandard()
            data = (_zstd_command(_Rewound(head, f), shown, what, max_bytes, warnings) if zstd is None else
                    _zstd_module(zstd, _Rewound(head, f), shown, what, max_bytes, warnings))
        else:
            data = _inflate(kind, _Rewound(head, f), shown, what, max_bytes, warnings)
    except OSError as e:
        raise file_error(e, f"{what} {shown}", "pass the log file inside it") from None
    if len(data) > max_bytes:
        raise InputError(f"{what} {shown} is larger than {_size(max_bytes)}"
                         + (f" after {kind} decompression" if kind else ""),
                         "pass the part around the crash (for example: tail -c 256M LOG > part.log)")
    text, replaced = _decode(data, shown, what, warnings)
    return LogText(text, path, kind, len(data), replaced, tuple(warnings))


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_TEXT_SAMPLE = 1 << 16
# control bytes a kernel log does not hold: all but tab, newline, carriage return, escape,
# and NUL (runs of it are holes of a sparse or truncated file, not binary data)
_CONTROL = bytes(b for b in range(1, 32) if b not in (9, 10, 13, 27))


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16/32 by byte-order mark, or UTF-16 without one (every other byte NUL)."""
    for bom, enc in _BOMS:
        if head.startswith(bom):
            return enc
    even, odd = head[0:_TEXT_SAMPLE:2], head[1:_TEXT_SAMPLE:2]
    if len(head) >= 64:
        if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
            return "utf-16-le"
        if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
            return "utf-16-be"
    return None


def _decode(data: bytes | bytearray, shown: str, what: str, warnings: list[str]) -> tuple[str, int]:
    """:func:`decode_log`, after telling a wide-character log (decoded as such, said) and
    data that is no text at all (said: it is read, but nothing in it is a log line)."""
    head = bytes(data[:_TEXT_SAMPLE])
    wide = _wide_encoding(head)
    if wide:
        text = bytes(data).decode(wide, errors="replace").lstrip("\ufeff")
        warnings.append(f"{what} {shown} is {wide.upper()} text: decoded as such")
        return text, text.count("\ufffd")
    text, replaced = decode_log(data)
    if head:
        junk = sum(head.count(bytes([c])) for c in _CONTROL) + text[:_TEXT_SAMPLE].count("\ufffd")
        if junk > 0.1 * len(head):
            warnings.append(f"{what} {shown} is not text ({100 * junk // len(head)}% of its first "
                            f"{len(head)} bytes are binary): few or no log records can be read from it")
    return text, replaced


def _zstandard():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _inflate(kind: str, raw: io.RawIOBase, shown: str, what: str, max_bytes: int, warnings: list[str]) -> bytearray:
    """gzip, xz or bzip2 with the stdlib, up to max_bytes + 1 bytes; data that ends early or
    goes bad keeps what came before, with a warning."""
    src = io.BufferedReader(raw, _CHUNK)
    if kind == "gzip":
        stream: BinaryIO = gzip.GzipFile(fileobj=src, mode="rb")
    elif kind == "xz":
        stream = lzma.LZMAFile(src)
    else:
        stream = bz2.BZ2File(src)
    bad_data = (EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error, ValueError)
    read = getattr(stream, "read1", stream.read)    # read1: what is decompressed comes out, even when
    out = bytearray()                               # the next read fails
    try:
        while len(out) <= max_bytes:
            chunk = read(min(_CHUNK, max_bytes + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    except bad_data as e:
        _bad_data(kind, "ends early" if isinstance(e, EOFError) else f"is damaged ({e})", out, shown, what, warnings)
    return out


def _zstd_module(zstd, raw: io.RawIOBase, shown: str, what: str, max_bytes: int, warnings: list[str]) -> bytearray:
    """zstd with the zstandard module, frame after frame. The input goes in small pieces: a
    zstd block of a few bytes can stand for 128 KiB, so this bounds what one call makes."""
    out = bytearray()
    d = zstd.ZstdDecompressor().decompressobj()
    in_frame = False
    try:
        while len(out) <= max_bytes:
            piece = raw.read(4096)
            if not piece:
                break
            while piece and len(out) <= max_bytes:
                out += d.decompress(piece)
                in_frame = True
                piece = b""
                if d.eof:           # the next frame, if any, starts in what this one left
                    piece, d, in_frame = d.unused_data, zstd.ZstdDecompressor().decompressobj(), False
    except zstd.ZstdError as e:
        _bad_data("zstd", f"is damaged ({e})", out, shown, what, warnings)
        return out
    if in_frame and len(out) <= max_bytes:
        _bad_data("zstd", "ends early", out, shown, what, warnings)
    return out


def _bad_data(kind: str, how: str, out: bytearray, shown: str, what: str, warnings: list[str]) -> None:
    """Compressed data that went bad: an error when nothing came out, else a warning."""
    if not out:
        raise InputError(f"{what} {shown}: its {kind} data {how}, nothing could be read",
                         "check the file (it may not be a log)")
    warnings.append(f"{what} {shown}: its {kind} data {how}; the {len(out)} bytes of text before that are used")


def _zstd_command(raw: io.RawIOBase, shown: str, what: str, max_bytes: int, warnings: list[str]) -> bytearray:
    """zstd data through the zstd command, fed from this process (so pipes work)."""
    exe = shutil.which("zstd")
    if exe is None:
        raise InputError(f"{what} {shown} is zstd-compressed and this Python has no zstd decompressor",
                         "install the zstandard module (pip install zstandard) or the zstd command "
                         "(apt-get install zstd), or decompress it first: zstd -dc LOG > log")
    proc = subprocess.Popen([exe, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    failure: list[OSError] = []

    def feed() -> None:
        try:
            while chunk := raw.read(_CHUNK):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass                # zstd stopped (damaged data, or we had enough)
        except OSError as e:
            failure.append(e)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = bytearray()
    try:
        while len(out) <= max_bytes:
            chunk = proc.stdout.read(min(_CHUNK, max_bytes + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    finally:
        if len(out) > max_bytes:
            proc.kill()
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        code = proc.wait()
        writer.join()
    if failure:
        raise failure[0]
    if code != 0 and len(out) <= max_bytes:
        _bad_data("zstd", f"is damaged or ends early ({err[-1] if err else f'zstd exit {code}'})", out, shown,
                  what, warnings)
    return out
