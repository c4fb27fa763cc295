"""Sizes as a reader says them: IEC units (KiB, MiB, GiB, TiB)."""

from __future__ import annotations

__all__ = ["iec"]

_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def iec(n: int) -> str:
    """``16777216`` -> "16 MiB", ``1536`` -> "1.5 KiB", ``100`` -> "100 bytes"; exact
    multiples without a decimal, others to one decimal place."""
    for unit, name in _UNITS:
        if n >= unit:
            whole, rest = divmod(n, unit)
            return f"{whole} {name}" if not rest else f"{n / unit:.1f} {name}"
    return f"{n} bytes"
