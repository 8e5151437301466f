"""Human-readable figures for result tables (CLI and app share them)."""

from __future__ import annotations


def fmt_seconds(s: float | None, missing: str = "-") -> str:
    if s is None:
        return missing
    if s < 1e-3:
        return f"{s * 1e6:,.0f} µs"
    if s < 1:
        return f"{s * 1e3:,.1f} ms"
    return f"{s:,.2f} s"


def fmt_rate(r: float | None, missing: str = "-") -> str:
    if r is None:
        return missing
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if r >= div:
            return f"{r / div:,.1f}{unit}"
    return f"{r:,.0f}"


def fmt_bytes(n: int | None, missing: str = "-") -> str:
    """Decimal units (1 MB = 10^6 bytes), as disk sizes are usually quoted."""
    if n is None:
        return missing
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} B"


def fmt_ratio(r: float | None, missing: str = "-") -> str:
    return missing if r is None else f"{r:.2f}×"
