"""Names for PCI ids from the pci.ids database (Debian's pci.ids package), looked up lazily.

pci.ids is ~1.3 MB and ~36,000 lines; parsing all of it costs more than the rest of a PCI
collection. Instead, one pass over its top-level lines builds a small index (each vendor's
name and the byte range of its block, the class and generic-subsystem blocks), cached as
JSON under ``$DUMPKIT_CACHE/pci-ids/`` (default ``~/.cache/dumpkit``) and keyed on the
file's path, mtime and size. A lookup then reads and parses only the block of the vendor
it needs. Without a writable cache the index is built in memory, once per process.

Lookups follow pciutils' rules: a subsystem is looked up under its device, then in the
generic ``S`` blocks, then as the device itself when the subsystem ids equal the device
ids; class names fall back from prog-if to subclass to class.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

__all__ = ["INDEX_FORMAT", "PCI_IDS_PATHS", "PciIds", "cache_dir", "load_pci_ids", "parse_pci_ids"]

PCI_IDS_PATHS = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"),
                 Path("/usr/share/pci.ids"))
INDEX_FORMAT = 1

# a top-level line: neither indented, nor a comment, nor empty
_TOP = re.compile(rb"^[^\t#\r\n][^\r\n]*", re.M)
_VENDOR = re.compile(rb"([0-9a-fA-F]{4})\s+(.*)")
_CLASS = re.compile(rb"C ([0-9a-fA-F]{2})\s+(.*)")
_GEN_SUB = re.compile(rb"S ([0-9a-fA-F]{4})\s*$")


def cache_dir() -> Path:
    """Where the pci.ids index is kept: ``$DUMPKIT_CACHE/pci-ids`` or ``~/.cache/dumpkit/pci-ids``."""
    return Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit") / "pci-ids"


def build_index(data: bytes) -> dict:
    """One pass over the top-level lines of pci.ids: vendor names and the byte range of
    every vendor, class and generic-subsystem block (a block runs to the next top-level line)."""
    tops = [(m.start(), m.end(), m.group(0).rstrip()) for m in _TOP.finditer(data)]
    vendors, classes, generic = [], [], []
    for i, (_start, end, line) in enumerate(tops):
        block_end = tops[i + 1][0] if i + 1 < len(tops) else len(data)
        if m := _CLASS.fullmatch(line):
            classes.append([int(m.group(1), 16), end, block_end, m.group(2).decode("utf-8", "replace").strip()])
        elif m := _GEN_SUB.fullmatch(line):
            generic.append([int(m.group(1), 16), end, block_end])
        elif m := _VENDOR.fullmatch(line):
            vendors.append([int(m.group(1), 16), end, block_end, m.group(2).decode("utf-8", "replace").strip()])
    return {"format": INDEX_FORMAT, "vendors": vendors, "classes": classes, "generic_subsystems": generic}


def _find(block: bytes, prefix: bytes, start: int, end: int) -> tuple[int, str] | None:
    """(end of line, name) of the line that starts with prefix followed by blanks
    (pci.ids writes its hex ids in lower case)."""
    pos = start
    while (pos := block.find(prefix, pos, end)) != -1:
        after = pos + len(prefix)
        if block[after:after + 1] in (b" ", b"\t"):
            eol = block.find(b"\n", after)
            eol = len(block) if eol == -1 else eol
            return eol, _text(block[after:eol])
        pos = after
    return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip()


def _entries(block: bytes, depth: int):
    """(nesting, fields) of the lines of a block; nesting 1 = one tab."""
    for line in block.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#") or not line.startswith("\t"):
            continue
        tabs = len(line) - len(line.lstrip("\t"))
        if tabs > depth:
            continue
        yield tabs, line.strip()


class PciIds:
    """pci.ids lookups; every lookup returns None when the name is not known.

    :param path: the pci.ids file (None: an empty database, numeric ids only)
    :param data: the file's bytes when already in memory (parse_pci_ids)
    """

    def __init__(self, path: str | None = None, data: bytes | None = None, index: dict | None = None):
        self.path = path
        self._data = data
        self._index = index
        self._vendor_names: dict[int, str] | None = None
        self._vendor_ranges: dict[int, tuple[int, int]] = {}
        self._blocks: dict[int, bytes] = {}
        self._device_lines: dict[tuple[int, int], tuple[int, str] | None] = {}
        self._generic: dict[int, dict[int, str]] | None = None
        self._classes: tuple[dict, dict, dict] | None = None
        self.index_source: str | None = None   # "cache", "built" or "memory"

    # --- index and blocks -----------------------------------------------------------

    def _load(self) -> None:
        if self._vendor_names is not None:
            return
        if self._index is None:
            self._index = self._read_or_build_index()
        self._vendor_names = {v: name for v, _s, _e, name in self._index.get("vendors", [])}
        self._vendor_ranges = {v: (s, e) for v, s, e, _n in self._index.get("vendors", [])}

    def _read_or_build_index(self) -> dict:
        if self.path is None:
            return {"vendors": [], "classes": [], "generic_subsystems": []}
        if self._data is not None:
            self.index_source = "memory"
            return build_index(self._data)
        st = os.stat(self.path)
        real = os.path.realpath(self.path)
        key = {"path": real, "mtime_ns": st.st_mtime_ns, "size": st.st_size}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        cached = cache_dir() / f"{digest}.json"
        try:
            index = json.loads(cached.read_text())
            if index.get("format") == INDEX_FORMAT and index.get("key") == key:
                self.index_source = "cache"
                return index
        except (OSError, ValueError):
            pass
        with open(self.path, "rb") as f:
            data = f.read()
        index = build_index(data)
        index["key"] = key
        self._data = data            # this run has the bytes anyway
        self.index_source = "built"
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".pci-ids-", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(index, out, separators=(",", ":"))
            os.replace(tmp, cached)
        except OSError:
            pass                     # read-only home: the in-memory index serves this process
        return index

    def _read(self, start: int, end: int) -> bytes:
        if self._data is not None:
            return self._data[start:end]
        with open(self.path, "rb") as f:   # type: ignore[arg-type]
            f.seek(start)
            return f.read(end - start)

    def _vendor_block(self, vendor: int) -> bytes:
        """The raw block of one vendor (its device and subsystem lines), read on first use;
        lookups search it instead of parsing it (Intel's block alone is a fifth of the file)."""
        self._load()
        if vendor not in self._blocks:
            rng = self._vendor_ranges.get(vendor)
            self._blocks[vendor] = self._read(*rng) if rng else b""
        return self._blocks[vendor]

    def _device_line(self, vendor: int, device: int) -> tuple[int, str] | None:
        """(end of the line, name) of a device under its vendor, found by a plain search."""
        key = (vendor, device)
        if key not in self._device_lines:
            block = self._vendor_block(vendor)
            self._device_lines[key] = _find(block, b"\n\t%04x" % device, 0, len(block))
        return self._device_lines[key]

    def _generic_subsystems(self) -> dict[int, dict[int, str]]:
        self._load()
        if self._generic is None:
            self._generic = {}
            for sv, start, end in self._index.get("generic_subsystems", []):   # type: ignore[union-attr]
                names = self._generic.setdefault(sv, {})
                for _tabs, body in _entries(self._read(start, end), 1):
                    try:
                        code, name = body.split(None, 1)
                        names[int(code, 16)] = name
                    except ValueError:
                        continue
        return self._generic

    def _class_tables(self) -> tuple[dict, dict, dict]:
        self._load()
        if self._classes is None:
            classes, subclasses, prog_ifs = {}, {}, {}
            for cls, start, end, name in self._index.get("classes", []):   # type: ignore[union-attr]
                classes[cls] = name
                sub = None
                for tabs, body in _entries(self._read(start, end), 2):
                    try:
                        code, text = body.split(None, 1)
                        if tabs == 1:
                            sub = int(code, 16)
                            subclasses[(cls, sub)] = text
                        elif sub is not None:
                            prog_ifs[(cls, sub, int(code, 16))] = text
                    except ValueError:
                        continue
            self._classes = (classes, subclasses, prog_ifs)
        return self._classes

    # --- lookups ----------------------------------------------------------------------

    @property
    def loaded_vendors(self) -> list[int]:
        """Vendors whose blocks were read so far (the laziness is observable)."""
        return sorted(self._blocks)

    def vendor(self, vendor: int) -> str | None:
        self._load()
        return self._vendor_names.get(vendor)   # type: ignore[union-attr]

    def device(self, vendor: int, device: int) -> str | None:
        found = self._device_line(vendor, device)
        return found[1] if found else None

    def subsystem(self, vendor: int, device: int, sub_vendor: int, sub_device: int) -> str | None:
        """The subsystem's name as lspci finds it: under the device, then the generic
        subsystem blocks, then the device's own name when the ids are the same."""
        name = None
        if found := self._device_line(vendor, device):
            block, start = self._vendor_block(vendor), found[0]     # the end of the device's line
            end = start - 1                           # the first "\n\t" to look at is the one at start
            while (end := block.find(b"\n\t", end + 1)) != -1 and block[end + 2:end + 3] == b"\t":
                pass                                  # the device's subsystem lines end at the next device
            end = len(block) if end == -1 else end
            sub = _find(block, b"\n\t\t%04x %04x" % (sub_vendor, sub_device), start, end)
            name = sub[1] if sub else None
        if name is None:
            name = self._generic_subsystems().get(sub_vendor, {}).get(sub_device)
        if name is None and (vendor, device) == (sub_vendor, sub_device):
            name = self.device(vendor, device)
        return name

    def base_class(self, base: int) -> str | None:
        return self._class_tables()[0].get(base)

    def subclass(self, base: int, sub: int) -> str | None:
        return self._class_tables()[1].get((base, sub))

    def prog_if(self, base: int, sub: int, prog_if: int) -> str | None:
        return self._class_tables()[2].get((base, sub, prog_if))

    def class_name(self, class_code: int) -> str | None:
        """Most specific name for a 24-bit class code (class, subclass, prog-if)."""
        base, sub, pi = class_code >> 16, (class_code >> 8) & 0xFF, class_code & 0xFF
        subclass, prog_if = self.subclass(base, sub), self.prog_if(base, sub, pi)
        if prog_if:
            return f"{subclass} ({prog_if})"
        return subclass or self.base_class(base)


def parse_pci_ids(text: str, path: str | None = None) -> PciIds:
    """A database over pci.ids text already in memory (same lookups, same laziness)."""
    return PciIds(path or "<memory>", data=text.encode("utf-8"))


@lru_cache(maxsize=4)
def load_pci_ids(path: str | None = None) -> PciIds:
    """The first pci.ids found (or the given one); an empty database if none exists,
    so that callers fall back to numeric ids. Nothing is parsed until a lookup."""
    candidates = [Path(path)] if path else list(PCI_IDS_PATHS)
    for p in candidates:
        if p.is_file():
            return PciIds(str(p))
    return PciIds()
