"""Markdown tables and the number formats every report uses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_cell(v: Any) -> str:
    """One table cell: ``None`` as an en dash, floats to 4 significant digits, ints with separators."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)



def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (numbers formatted, None as an en dash, ``|`` escaped)."""
    def cell(v: Any) -> str:
        return format_cell(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt_metric(v: Any) -> str:
    """A quality metric to 4 significant digits, trailing zeros kept: a PSNR of 31.40 beside 31.41 must not read 31.4."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
        return "–"
    return f"{v:#.4g}".rstrip(".")


def fmt_count(n: float | None) -> str:
    """``7651648`` -> ``7.65M`` (k, M, G); small counts as they are."""
    if n is None:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def fmt_bytes(n: float | None) -> str:
    """``45736`` -> ``44.7 KiB`` (binary units, as the budget grammar's KiB/MiB)."""
    if n is None:
        return "–"
    for div, unit in ((1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g} B"


def fmt_ratio(r: float | None) -> str:
    """``0.5826`` -> ``0.583x``."""
    return "–" if r is None or math.isnan(r) else f"{r:.3g}x"


def fmt_threads(n: int | None) -> str:
    """``1`` -> ``1 thread``, ``2`` -> ``2 threads``."""
    return f"{n} thread" + ("" if n == 1 else "s")
