"""Small statistics for noisy timings: median with min–max, percentiles, A/B ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float]) -> dict[str, Any]:
    """{median, min, max, n} of `values` (an empty list gives None values)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0–100) by linear interpolation between closest ranks."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(s: dict[str, Any] | None, unit: str = "s", digits: int = 2) -> str:
    """`median (min–max)` for a summary, or `—`."""
    if not s or s.get("median") is None:
        return "—"
    d = digits
    if s["n"] == 1:
        return f"{s['median']:.{d}f} {unit}".strip()
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}–{s['max']:.{d}f}) {unit}".strip()
