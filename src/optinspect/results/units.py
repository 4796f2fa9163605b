"""Counts and sizes as every message and table says them: ``1,234``, ``2.45 GiB``,
``3 sentences``. Plain text, no torch: the renderers and the analyses' notes share them.
"""

from __future__ import annotations

__all__ = ["count_noun", "format_bytes", "format_count"]


def format_count(value: int) -> str:
    """An exact count with thousands separators."""
    return f"{value:,}"


def format_bytes(value: int) -> str:
    """Bytes in binary units with three significant digits: ``2.45 GiB``."""
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    digits = 0 if size >= 100 else 1 if size >= 10 else 2
    return f"{size:.{digits}f} {unit}"


def count_noun(n: int, noun: str) -> str:
    """``1 token``, ``2 tokens``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
