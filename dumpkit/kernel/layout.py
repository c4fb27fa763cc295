"""Member probes, done once per program and type and kept in ``prog.cache``."""

from __future__ import annotations

import drgn

__all__ = ["has_member", "member_type"]

_CACHE_KEY = "dumpkit.kernel.layout"


def _strip(t: drgn.Type) -> drgn.Type:
    while t.kind in (drgn.TypeKind.TYPEDEF, drgn.TypeKind.POINTER):
        t = t.type
    return t


def _walk(prog: drgn.Program, type_name: str, path: str) -> drgn.Type | None:
    try:
        t = prog.type(type_name)
    except LookupError:
        return None
    for part in path.split("."):
        t = _strip(t)
        try:
            if not t.has_member(part):
                return None
            t = t.member(part).type
        except (TypeError, LookupError):
            return None
    return t


def member_type(prog: drgn.Program, type_name: str, path: str) -> drgn.Type | None:
    """The type of ``type_name``'s member ``path`` ("dev.iommu_group"), or None when the
    kernel's type has no such member (or the type is unknown). Cached per program."""
    cache = prog.cache.setdefault(_CACHE_KEY, {})
    key = (type_name, path)
    if key not in cache:
        cache[key] = _walk(prog, type_name, path)
    return cache[key]


def has_member(prog: drgn.Program, type_name: str, path: str) -> bool:
    """Whether ``type_name`` has the member path ``path`` in this kernel (cached)."""
    return member_type(prog, type_name, path) is not None
